#!/usr/bin/env bash
# A real single-node Kafka 4.1.1 broker (KRaft, combined broker + controller) for local
# development and tests. No Docker: the jars come from Maven Central, java runs them.
#
#   scripts/kafka.sh fetch            download the broker jars once (cached, idempotent)
#   scripts/kafka.sh up [DIR]         start a broker with state in DIR, print its bootstrap
#   scripts/kafka.sh down [DIR]       stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh bootstrap [DIR]  print the bootstrap address (127.0.0.1:PORT)
#
# DIR defaults to .run/kafka in the repository. The first `up` in a DIR picks two free
# loopback ports and formats the storage; later `up`s in the same DIR restart the broker
# on the same ports with its data kept, so "the broker restarts" can be tested.
# Topics are never auto-created: tests and operators create them explicitly, as on most
# production clusters, so a missing topic shows up in tests too.
#
# Environment: STREAMSTOP_CACHE (default ~/.cache/streamstop), JAVA_HOME (else java on
# PATH), KAFKA_START_TIMEOUT_S (default 60), KAFKA_EXTRA_PROPERTIES (lines added to the
# broker's server.properties by the first `up` in a DIR, e.g. to turn topic
# auto-creation on). Only `up` and `bootstrap` write to stdout.
set -euo pipefail

readonly KAFKA_VERSION=4.1.1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly POM="$REPO/kafka/pom.xml"
readonly LOG_CONFIG="$REPO/kafka/log4j2.yaml"
readonly CACHE="${STREAMSTOP_CACHE:-$HOME/.cache/streamstop}/kafka/$KAFKA_VERSION"
readonly LIBS="$CACHE/libs"
# Holds the hash of the pom the jars were fetched with: a changed pom fetches again.
readonly MARKER="$CACHE/fetched"
readonly JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
readonly STOP_TIMEOUT_S=30

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

fetch() {
    local want tmp
    want=$(sha256sum "$POM" | cut -d' ' -f1)
    if [[ -f $MARKER && $(<"$MARKER") == "$want" && -d $LIBS ]]; then
        return 0
    fi
    echo "kafka.sh: fetching Kafka $KAFKA_VERSION jars into $LIBS" >&2
    mkdir -p "$CACHE"
    # Copy into a private directory first so a failed or concurrent fetch never leaves a
    # half-filled libs directory behind a valid marker.
    tmp=$(mktemp -d "$CACHE/libs.XXXXXX")
    # shellcheck disable=SC2064  # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT
    # -q: errors only. Debian's Maven 3.8 writes colour resets even with colour off and no
    # terminal; jansi.noreset stops them, and must be a JVM option to act early enough.
    MAVEN_OPTS="${MAVEN_OPTS:+$MAVEN_OPTS }-Djansi.noreset=true" \
        mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    trap - EXIT
    echo "$want" >"$MARKER"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A Kafka cluster id: 16 random bytes, base64url without padding.
cluster_id() {
    python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))'
}

# True while PID runs (a zombie has exited: only its parent has not reaped it yet).
is_alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $stat != Z* ]]
}

# True when PID is the broker of DIR (not a reused pid, not a reaped zombie).
# -ww: without it ps cuts the command line at $COLUMNS, which pytest sets.
is_broker() {
    local pid=$1 dir=$2 args
    args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
    [[ $args == *kafka.Kafka*"$dir/server.properties"* ]]
}

running_pid() {
    local dir=$1 pid
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    is_broker "$pid" "$dir" || return 1
    echo "$pid"
}

write_config() {
    local dir=$1 port controller_port
    port=$(free_port)
    controller_port=$(free_port)
    [[ $port != "$controller_port" ]] || controller_port=$(free_port)
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Lets tests use short session timeouts, so a killed consumer leaves its group quickly.
group.min.session.timeout.ms=1000
# Retention is enforced within a second of a record's expiry (tests of a hold longer
# than the input topic's retention use topics with a tiny retention.ms).
log.retention.check.interval.ms=1000
# Two cores: few threads.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
${KAFKA_EXTRA_PROPERTIES:-}
EOF
    echo "127.0.0.1:$port" >"$dir/bootstrap"
}

format_storage() {
    local dir=$1
    # A one-shot tool: C1-only JIT and serial GC start it about twice as fast.
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$LOG_CONFIG" kafka.tools.StorageTool \
        format -t "$(cluster_id)" -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
        die "storage format failed, see $dir/format.log"
}

launch() {
    local dir=$1
    [[ -f $dir/kafka.log ]] && mv "$dir/kafka.log" "$dir/kafka.log.prev"
    # setsid: the broker outlives this script and must not get the caller's Ctrl-C.
    # All three streams are redirected so a caller capturing our stdout is not held open.
    setsid "$JAVA" -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG_CONFIG" -cp "$LIBS/*" \
        kafka.Kafka "$dir/server.properties" </dev/null >"$dir/kafka.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/pid"
    # Until the forked shell has exec'd java, `down` would not recognise the pid as ours.
    while is_alive "$pid" && ! is_broker "$pid" "$dir"; do
        sleep 0.05
    done
}

port_open() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# "Kafka Server started" is logged once the broker is unfenced, i.e. it serves requests.
# Prints why and fails when the broker exits or the deadline passes.
wait_ready() {
    local dir=$1 pid bootstrap deadline
    pid=$(<"$dir/pid")
    bootstrap=$(<"$dir/bootstrap")
    deadline=$((SECONDS + ${KAFKA_START_TIMEOUT_S:-60}))
    until grep -q "Kafka Server started" "$dir/kafka.log" && port_open "$bootstrap"; do
        if ! is_alive "$pid"; then
            # The errors and their causes, not the last lines of a stack trace.
            grep -E '^\[[^]]*\] (ERROR|FATAL)|^Caused by:' "$dir/kafka.log" | head -n 8 >&2 || true
            echo "kafka.sh: broker exited during start-up, see $dir/kafka.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "kafka.sh: broker not ready after ${KAFKA_START_TIMEOUT_S:-60}s, see $dir/kafka.log" >&2
            return 1
        fi
        sleep 0.2
    done
}

up() {
    local dir=$1
    fetch
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if ! running_pid "$dir" >/dev/null; then
        if [[ ! -f $dir/server.properties ]]; then
            write_config "$dir"
            format_storage "$dir"
        fi
        launch "$dir"
        # A broker that never became ready is not left running behind a failed `up`.
        wait_ready "$dir" || {
            down "$dir"
            exit 1
        }
    fi
    cat "$dir/bootstrap"
}

# Waits up to $3 seconds for broker PID of DIR to exit; false if it is still running.
wait_exit() {
    local pid=$1 dir=$2 deadline=$((SECONDS + $3))
    while is_broker "$pid" "$dir"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

down() {
    local dir=$1 pid
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    if pid=$(running_pid "$dir"); then
        kill -TERM "$pid"
        if ! wait_exit "$pid" "$dir" "$STOP_TIMEOUT_S"; then
            echo "kafka.sh: broker $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s, killing it" >&2
            kill -KILL "$pid"
            wait_exit "$pid" "$dir" 10 || die "broker $pid survived SIGKILL"
        fi
    fi
    rm -f "$dir/pid"
}

bootstrap() {
    [[ -f $1/bootstrap ]] || die "no broker state in $1 (run: scripts/kafka.sh up $1)"
    cat "$1/bootstrap"
}

main() {
    local cmd=${1:-} dir=${2:-$REPO/.run/kafka}
    case $cmd in
    fetch) fetch ;;
    up) up "$dir" ;;
    down) down "$dir" ;;
    bootstrap) bootstrap "$dir" ;;
    *) die "usage: $0 {fetch|up [DIR]|down [DIR]|bootstrap [DIR]}" ;;
    esac
}

main "$@"
