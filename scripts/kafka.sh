#!/usr/bin/env bash
# A real single-node Kafka 4.1.1 broker (KRaft, combined broker + controller) for local
# development and tests. No Docker: the jars come from Maven Central, java runs them.
#
#   scripts/kafka.sh fetch                download the broker jars once (cached, idempotent)
#   scripts/kafka.sh up [DIR]             start a broker with state in DIR, print its bootstrap
#   scripts/kafka.sh up-secure [DIR]      the same with secured listeners too (below)
#   scripts/kafka.sh down [DIR]           stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh kill DIR             SIGKILL it (a crashed broker) and wait until it is gone
#   scripts/kafka.sh cluster-up DIR N     start an N-node cluster, print every node's bootstrap
#   scripts/kafka.sh cluster-down DIR     stop every node of the cluster in DIR
#   scripts/kafka.sh bootstrap [DIR]      print the bootstrap address (127.0.0.1:PORT)
#   scripts/kafka.sh listener NAME [DIR]  print the address of listener NAME
#   scripts/kafka.sh tool CLASS [ARG...]  run a Kafka command-line tool (e.g. ConfigCommand)
#   scripts/kafka.sh certs DIR            only make the test certificates (DIR/tls), no broker
#
# DIR defaults to .run/kafka (.run/kafka-secure for up-secure) in the repository. The first
# `up` in a DIR picks free loopback ports and formats the storage; later `up`s in the same
# DIR restart the broker on the same ports with its data kept, so "the broker restarts" can
# be tested. A cluster's node I lives in DIR/nodeI (node.id I; every node is a broker and a
# controller voter; internal topics replicated N times, min.insync.replicas 2): `up`,
# `down` and `kill` on DIR/nodeI take one node away and bring it back. Topics are never auto-created: tests and operators create them explicitly, as
# on most production clusters, so a missing topic shows up in tests too.
#
# `up-secure` keeps the PLAINTEXT listener (the bootstrap; its ANONYMOUS principal is a
# super user, for tests and admin work) and adds, all on 127.0.0.1 with a test CA made by
# openssl in DIR/tls (certificates name 127.0.0.1 and localhost):
#   SASL_SSL        SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; sessions end after
#                   KAFKA_SASL_REAUTH_MS (default 10000), so clients reconnect regularly
#   SASL_PLAINTEXT  SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN
#   MTLS            SSL with ssl.client.auth=required; principal = the certificate's CN
#   OAUTH           SASL_SSL with OAUTHBEARER checked by Kafka's OIDC validator against
#                   KAFKA_OAUTH_JWKS_URL (audience "kafka"; sessions end after
#                   KAFKA_OAUTH_REAUTH_MS, default 5000); only when that variable is set
# User `streamstop` (SCRAM both ways and PLAIN) has the password in DIR/users/streamstop.
# StandardAuthorizer is on with allow.everyone.if.no.acl.found=true: no ACL, no limit.
# DIR/tls also holds client certificates: client (CN=streamstop-mtls), client-protected
# (the same key encrypted with the password in client-protected.password), expired (same
# CA, validity ended, also names 127.0.0.1) and other (CN=streamstop-mtls from other-ca,
# which the broker does not trust).
#
# Environment: STREAMSTOP_CACHE (default ~/.cache/streamstop), JAVA_HOME (else java on
# PATH), KAFKA_START_TIMEOUT_S (default 60), KAFKA_EXTRA_PROPERTIES (lines added to the
# broker's server.properties by the first `up` in a DIR, e.g. to turn topic
# auto-creation on). Only `up`, `up-secure`, `bootstrap`, `listener` and `tool` write to
# stdout.
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

# Ports chosen for the brokers being configured, one a line (see claim_port).
CLAIMED=

# A free port not chosen before (a port chosen but not bound yet is free to the kernel,
# which may hand it out again); recorded in $CLAIMED.
claim_port() {
    local port
    port=$(free_port)
    while grep -qx "$port" "$CLAIMED" 2>/dev/null; do port=$(free_port); done
    echo "$port" >>"$CLAIMED"
    echo "$port"
}

# Adds listener NAME with PROTOCOL on a free port to DIR/listeners ("NAME PROTOCOL ADDRESS").
add_listener() {
    local dir=$1 name=$2 protocol=$3
    echo "$name $protocol 127.0.0.1:$(claim_port)" >>"$dir/listeners"
}

# DIR/listeners joined with commas, as NAME://ADDRESS (url) or NAME:PROTOCOL (map).
listener_list() {
    local dir=$1 form=$2
    awk -v form="$form" '{ printf "%s%s", (NR > 1 ? "," : ""), (form == "url" ? $1 "://" $3 : $1 ":" $2) }' \
        "$dir/listeners"
}

# write_config DIR MODE [NODE_ID VOTERS REPLICAS]: a cluster's node passes its id, the
# quorum's voters ("ID@127.0.0.1:PORT,...", its own controller port among them) and the
# replication factor; without them node 1 is the only voter and nothing is replicated.
write_config() {
    local dir=$1 mode=$2 node_id=${3:-1} voters=${4:-} replicas=${5:-1}
    local controller_port listeners min_isr=1
    ((replicas == 1)) || min_isr=2
    rm -f "$dir/listeners" "$dir/format-args" "$dir/jvm-args"
    [[ -n $CLAIMED ]] || {
        CLAIMED=$dir/claimed-ports
        rm -f "$CLAIMED"
    }
    add_listener "$dir" PLAINTEXT PLAINTEXT
    [[ $mode != secure ]] || add_secure_listeners "$dir"
    [[ -n $voters ]] || voters=1@127.0.0.1:$(claim_port)
    controller_port=$(tr ',' '\n' <<<"$voters" | awk -F'[@:]' -v id="$node_id" '$1 == id { print $3 }')
    listeners=$(listener_list "$dir" url)
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listeners
listener.security.protocol.map=$(listener_list "$dir" map),CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=6
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=3
# Transactions open longer than their timeout are aborted within a second (tests of a
# producer stalled past its transaction timeout), not within the default 10 s.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
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
    [[ $mode != secure ]] || secure_properties "$dir" >>"$dir/server.properties"
    awk '$1 == "PLAINTEXT" { print $3 }' "$dir/listeners" >"$dir/bootstrap"
}

add_secure_listeners() {
    local dir=$1
    add_listener "$dir" SASL_SSL SASL_SSL
    add_listener "$dir" SASL_PLAINTEXT SASL_PLAINTEXT
    add_listener "$dir" MTLS SSL
    [[ -z ${KAFKA_OAUTH_JWKS_URL:-} ]] || add_listener "$dir" OAUTH SASL_SSL
}

# An EC P-256 key and certificate for CN=$3 into DIR/tls/$2.{key,crt}, signed by CA $4
# (self-signed CA when empty), valid $5 days (-1: expired), with x509v3 extensions $6.
make_cert() {
    local tls=$1/tls name=$2 cn=$3 ca=$4 days=$5 extensions=${6:-} signer
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/$name.key"
    openssl req -new -key "$tls/$name.key" -subj "/CN=$cn" -out "$tls/$name.csr"
    {
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        if [[ -z $ca ]]; then
            echo "basicConstraints=critical,CA:TRUE"
            echo "keyUsage=critical,keyCertSign,cRLSign"
        else
            echo "basicConstraints=critical,CA:FALSE"
            echo "keyUsage=critical,digitalSignature"
        fi
        [[ -z $extensions ]] || echo "$extensions"
    } >"$tls/$name.ext"
    if [[ -z $ca ]]; then
        signer=(-key "$tls/$name.key")
    else
        signer=(-CA "$tls/$ca.crt" -CAkey "$tls/$ca.key" -CAcreateserial)
    fi
    openssl x509 -req -in "$tls/$name.csr" "${signer[@]}" -days "$days" \
        -extfile "$tls/$name.ext" -out "$tls/$name.crt" 2>/dev/null
    rm -f "$tls/$name.csr" "$tls/$name.ext"
}

make_certs() {
    local dir=$1 tls=$1/tls
    mkdir -p "$tls"
    make_cert "$dir" ca "streamstop test CA" "" 30
    make_cert "$dir" broker localhost ca 30 "subjectAltName=IP:127.0.0.1,DNS:localhost"
    make_cert "$dir" client streamstop-mtls ca 30 "extendedKeyUsage=clientAuth"
    # Expired, for either end of a connection.
    make_cert "$dir" expired streamstop-mtls ca -1 "subjectAltName=IP:127.0.0.1,DNS:localhost"
    make_cert "$dir" other-ca "another test CA" "" 30
    make_cert "$dir" other streamstop-mtls other-ca 30 "extendedKeyUsage=clientAuth"
    # The client's key again, encrypted: for clients that must give a key password.
    openssl rand -hex 16 >"$tls/client-protected.password"
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$tls/client.key" \
        -passout "file:$tls/client-protected.password" -out "$tls/client-protected.key"
    cp "$tls/client.crt" "$tls/client-protected.crt"
    # Kafka's PEM key store: the unencrypted PKCS#8 key, then the certificate.
    openssl pkcs8 -topk8 -nocrypt -in "$tls/broker.key" | cat - "$tls/broker.crt" >"$tls/broker.pem"
    chmod 600 "$tls"/*.key "$tls"/*.password "$tls/broker.pem"
}

# SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN on listener $2 (lower case); PLAIN knows user
# streamstop with password $1 (SCRAM users live in the cluster metadata).
sasl_listener_properties() {
    local password=$1 listener=$2
    cat <<EOF
listener.name.$listener.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.$listener.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$listener.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$listener.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_streamstop="$password";
EOF
}

# Prints the secured listeners' properties; writes the certificates, the user's password,
# the SCRAM credentials to format with (DIR/format-args) and JVM flags (DIR/jvm-args).
secure_properties() {
    local dir=$1 password jwks=${KAFKA_OAUTH_JWKS_URL:-} mechanism
    make_certs "$dir"
    mkdir -p "$dir/users"
    password=$(openssl rand -hex 16)
    (umask 077 && echo "$password" >"$dir/users/streamstop")
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        printf '%s\n' --add-scram "$mechanism=[name=streamstop,password=$password]" >>"$dir/format-args"
    done
    cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.crt
listener.name.mtls.ssl.client.auth=required
# User:streamstop-mtls for the client certificate, not its whole distinguished name.
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT
listener.name.sasl_ssl.connections.max.reauth.ms=${KAFKA_SASL_REAUTH_MS:-10000}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=true
EOF
    sasl_listener_properties "$password" sasl_ssl
    sasl_listener_properties "$password" sasl_plaintext
    [[ -n $jwks ]] || return 0
    cat <<EOF
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
listener.name.oauth.oauthbearer.connections.max.reauth.ms=${KAFKA_OAUTH_REAUTH_MS:-5000}
sasl.oauthbearer.jwks.endpoint.url=$jwks
sasl.oauthbearer.expected.audience=kafka
EOF
    # Kafka 4 fetches no URL that this system property does not allow.
    echo "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=$jwks" >"$dir/jvm-args"
}

# format_storage DIR [CLUSTER_ID]: every node of a cluster is formatted with the same id.
format_storage() {
    local dir=$1 cluster=${2:-$(cluster_id)} extra=()
    [[ ! -f $dir/format-args ]] || mapfile -t extra <"$dir/format-args"
    # A one-shot tool: C1-only JIT and serial GC start it about twice as fast.
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$LOG_CONFIG" kafka.tools.StorageTool \
        format --cluster-id="$cluster" -c "$dir/server.properties" "${extra[@]}" >"$dir/format.log" 2>&1 ||
        die "storage format failed, see $dir/format.log"
}

launch() {
    local dir=$1 extra=()
    [[ -f $dir/kafka.log ]] && mv "$dir/kafka.log" "$dir/kafka.log.prev"
    [[ ! -f $dir/jvm-args ]] || mapfile -t extra <"$dir/jvm-args"
    # setsid: the broker outlives this script and must not get the caller's Ctrl-C.
    # All three streams are redirected so a caller capturing our stdout is not held open.
    setsid "$JAVA" -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG_CONFIG" -cp "$LIBS/*" "${extra[@]}" \
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
    local dir=$1 mode=$2
    fetch
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if ! running_pid "$dir" >/dev/null; then
        if [[ ! -f $dir/server.properties ]]; then
            write_config "$dir" "$mode"
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

kill_broker() {
    local dir pid
    dir=$(cd "$1" && pwd)
    pid=$(running_pid "$dir") || die "no broker running in $dir"
    kill -KILL "$pid"
    wait_exit "$pid" "$dir" 10 || die "broker $pid survived SIGKILL"
    rm -f "$dir/pid"
}

# Nodes 1..COUNT in DIR/node1..; the first call configures and formats them, later ones
# start the nodes that are not running. Prints their bootstraps, comma separated.
cluster_up() {
    local dir=$1 count=$2 id voters="" cluster node
    fetch
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ ! -f $dir/node1/server.properties ]]; then
        CLAIMED=$dir/claimed-ports
        rm -f "$CLAIMED"
        for ((id = 1; id <= count; id++)); do
            voters+="${voters:+,}$id@127.0.0.1:$(claim_port)"
        done
        cluster=$(cluster_id)
        for ((id = 1; id <= count; id++)); do
            mkdir -p "$dir/node$id"
            write_config "$dir/node$id" plain "$id" "$voters" "$count"
            format_storage "$dir/node$id" "$cluster"
        done
    fi
    # All at once: a node is not ready before a majority of the voters runs.
    for node in "$dir"/node*/; do
        running_pid "${node%/}" >/dev/null || launch "${node%/}"
    done
    for node in "$dir"/node*/; do
        wait_ready "${node%/}" || {
            cluster_down "$dir"
            exit 1
        }
    done
    cat "$dir"/node*/bootstrap | paste -sd,
}

# Stops the nodes at once: one by one, the last ones would wait for a lost quorum.
cluster_down() {
    local dir=$1 node pids=() pid failed=0
    [[ -d $dir ]] || return 0
    for node in "$dir"/node*/; do
        [[ -d $node ]] || continue
        down "${node%/}" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    return "$failed"
}

bootstrap() {
    [[ -f $1/bootstrap ]] || die "no broker state in $1 (run: scripts/kafka.sh up $1)"
    cat "$1/bootstrap"
}

listener() {
    local name=$1 dir=$2
    [[ -f $dir/listeners ]] || die "no broker state in $dir (run: scripts/kafka.sh up-secure $dir)"
    awk -v name="$name" '$1 == name { print $3; found = 1 } END { exit !found }' "$dir/listeners" ||
        die "the broker in $dir has no listener $name"
}

tool() {
    fetch
    "$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$LOG_CONFIG" "$@"
}

main() {
    local cmd=${1:-} dir=${2:-$REPO/.run/kafka}
    case $cmd in
    fetch) fetch ;;
    up) up "$dir" plain ;;
    up-secure) up "${2:-$REPO/.run/kafka-secure}" secure ;;
    down) down "$dir" ;;
    kill) kill_broker "${2:?usage: $0 kill DIR}" ;;
    cluster-up) cluster_up "${2:?usage: $0 cluster-up DIR N}" "${3:?usage: $0 cluster-up DIR N}" ;;
    cluster-down) cluster_down "${2:?usage: $0 cluster-down DIR}" ;;
    bootstrap) bootstrap "$dir" ;;
    listener) listener "${2:?usage: $0 listener NAME [DIR]}" "${3:-$REPO/.run/kafka-secure}" ;;
    tool) tool "${@:2}" ;;
    certs) make_certs "${2:?usage: $0 certs DIR}" ;;
    *) die "usage: $0 {fetch|up [DIR]|up-secure [DIR]|down [DIR]|kill DIR|cluster-up DIR N|cluster-down DIR|bootstrap [DIR]|listener NAME [DIR]|tool CLASS [ARG...]|certs DIR}" ;;
    esac
}

main "$@"
