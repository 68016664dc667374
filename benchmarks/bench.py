"""`make bench`: streamstop against the ceiling of its own stack and the Java client.

Pre-produces BENCH_RECORDS records (default 200,000) over 6 partitions on the local broker,
then measures the ceiling (`ceiling.py`, no HTTP), the Java anchor (`Anchor.java`, the same
job with the Java Kafka client, no HTTP) and `streamstop run` at several API latencies,
each with its own consumer group and output topic, for records/s and CPU per record. Then
the same three (streamstop at 0 ms) on a BENCH_BACKLOG_RECORDS backlog (default 1,000,000),
where JVM start-up no longer decides the comparison and streamstop's peak RSS is checked.
With BENCH_BASELINE set to a git ref (say `main`), that ref's streamstop runs the backlog
too, interleaved with the rest (`streamstop-<ref>-backlog`): a before/after within one run.
Exactly-once (`delivery.guarantee = "exactly_once"`) is measured beside at-least-once:
throughput at 0 ms (interleaved with the other cases), p99 at the same paced rate, and
a run on BENCH_EOS_PARTITIONS input partitions (default 24: one producer each) for peak
RSS and sockets. Writes `benchmarks/results/latest.json`, `latest.md` and `latest.png`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from daemon_proc import TEST_TOKEN, Daemon, wait_for, write_config  # noqa: E402
from fakeapi_proc import running_fake_api  # noqa: E402
from kafkahelp import (  # noqa: E402
    Message,
    consume_all,
    create_topic,
    end_offsets,
    lag,
    produce,
    unique_name,
)

Row = dict[str, Any]

RECORDS = int(os.environ.get("BENCH_RECORDS", "200000"))
LATENCIES_MS = [int(x) for x in os.environ.get("BENCH_LATENCIES_MS", "0,50,200").split(",")]
PACED_LATENCY_MS = int(os.environ.get("BENCH_PACED_LATENCY_MS", "50"))
PACED_SECONDS = float(os.environ.get("BENCH_PACED_SECONDS", "15"))
BACKLOG_RECORDS = int(os.environ.get("BENCH_BACKLOG_RECORDS", "1000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BACKLOG_REPEATS = int(os.environ.get("BENCH_BACKLOG_REPEATS", str(REPEATS)))
BASELINE = os.environ.get("BENCH_BASELINE", "")
PARTITIONS = 6
EOS_PARTITIONS = int(os.environ.get("BENCH_EOS_PARTITIONS", "24"))
EXACTLY_ONCE = {"delivery": {"guarantee": "exactly_once"}}
# The latency exactly-once may add at the paced rate: delivery.transaction_interval_ms.
EOS_LATENCY_BUDGET_MS = 100
# Exactly-once's throughput target at 0 ms, against at-least-once's.
EOS_THROUGHPUT_TARGET = 0.7
MAX_SIZE = 10_000
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", REPO / "benchmarks" / "results"))
TICKS = os.sysconf("SC_CLK_TCK")
# The jars scripts/kafka.sh fetches (same cache, same Kafka version).
CACHE = Path(os.environ.get("STREAMSTOP_CACHE", Path.home() / ".cache" / "streamstop"))
KAFKA_LIBS = CACHE / "kafka" / "4.1.1" / "libs"
ANCHOR_SOURCE = REPO / "benchmarks" / "Anchor.java"
JAVA_BIN = Path(os.environ["JAVA_HOME"]) / "bin" if os.environ.get("JAVA_HOME") else None
# Timestamps are the broker's append times, not the producers' clocks: time-to-result is
# measured from the input record's append to the result's append.
BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of a live process, every thread, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process, from /proc."""
    cpu = sum(proc_cpu(pid))
    peak_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    return cpu, peak_kb / 1024


def records(count: int) -> list[Message]:
    return [
        Message(orjson.dumps({"messageUuid": str(uuid.uuid4()), "requestId": f"b{i}"}))
        for i in range(count)
    ]


def latencies_ms(
    bootstrap: str, input_topic: str, output: str, count: int, started_ms: float = 0.0
) -> list[float]:
    """Result append time minus record append time, sorted. For a pre-produced backlog
    `started_ms` (the case's start) replaces older append times: a record cannot be
    answered before the case began, and cases share one input topic."""
    appended = {
        (r.partition, r.offset): r.timestamp
        for r in consume_all(bootstrap, input_topic, count, timeout_s=120)
    }
    out = []
    for record in consume_all(bootstrap, output, count, timeout_s=120):
        source = orjson.loads(record.value)["source"]
        since = max(started_ms, appended[(source["partition"], source["offset"])])
        out.append(record.timestamp - since)
    return sorted(out)


def pct(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def daemon_config(
    path: Path,
    bootstrap: str,
    topic: str,
    output: str,
    group: str,
    api_url: str,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The daemon at its defaults (plus `extra` sections), pointed at this run's topics
    and fake API."""
    return write_config(
        path,
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "input_topic": topic,
                "output_topic": output,
                "group_id": group,
            },
            "api": {"url": api_url, "token": TEST_TOKEN},
            "observability": {"http_port": 0},
            **(extra or {}),
        },
    )


def baseline_source(ref: str, workdir: Path) -> Path:
    """A directory holding the `streamstop` package as git ref `ref` has it (extracted
    once per commit), for `source_env`. It runs with this venv's dependencies."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = workdir / f"baseline-{commit[:12]}"
    if not (target / "streamstop").is_dir():
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "streamstop"],
            check=True,
            capture_output=True,
        ).stdout
        # Extracted aside and renamed, as the anchor's classes are built.
        building = Path(tempfile.mkdtemp(dir=workdir, prefix="building-"))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(building, filter="data")
            with contextlib.suppress(OSError):  # a concurrent run renamed the same first
                building.rename(target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


def source_env(source: Path | None) -> dict[str, str] | None:
    """The environment in which `python -m streamstop` runs the package under `source`
    rather than the working tree's (the current directory goes first on `sys.path`
    unless PYTHONSAFEPATH is set) or the installed one; None: the usual one."""
    if source is None:
        return None
    return {"PYTHONPATH": str(source), "PYTHONSAFEPATH": "1"}


def sockets(pid: int) -> int:
    """Sockets a live process holds open now."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


def java_tool(name: str) -> str:
    """`java` or `javac`: JAVA_HOME's if set (as scripts/kafka.sh does), else on PATH."""
    return str(JAVA_BIN / name) if JAVA_BIN else name


def compile_anchor() -> list[str]:
    """Compile the Java anchor against the Kafka jars into the cache (once per source and
    jar set: a run whose source is unchanged reuses the classes); returns its command."""
    jars = sorted(path.name for path in KAFKA_LIBS.glob("*.jar"))
    for needed in ("kafka-clients-", "jackson-databind-"):
        if not any(name.startswith(needed) for name in jars):
            raise SystemExit(f"bench: no {needed}*.jar in {KAFKA_LIBS} (scripts/kafka.sh fetch)")
    digest = hashlib.sha256(ANCHOR_SOURCE.read_bytes() + "\n".join(jars).encode()).hexdigest()
    classes = CACHE / "bench" / f"anchor-{digest[:16]}"
    classpath = f"{KAFKA_LIBS}/*"
    if not (classes / "Anchor.class").exists():
        classes.parent.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed, so a run never sees a half-written class directory.
        building = Path(tempfile.mkdtemp(dir=classes.parent, prefix="building-"))
        javac = [java_tool("javac"), "-d", str(building), "-cp", classpath, str(ANCHOR_SOURCE)]
        try:
            try:
                subprocess.run(javac, check=True)
            except FileNotFoundError:
                raise SystemExit(f"bench: no {javac[0]}: the Java anchor needs a JDK") from None
            with contextlib.suppress(OSError):  # a concurrent run renamed the same first
                building.rename(classes)
        finally:
            shutil.rmtree(building, ignore_errors=True)  # gone once renamed
    return [java_tool("java"), "-cp", f"{classes}:{classpath}", "Anchor"]


def run_program(
    case: str,
    command: Sequence[str],
    bootstrap: str,
    topic: str,
    count: int,
    workdir: Path,
    measure_latency: bool,
) -> Row:
    """One run of a program that consumes `topic` in a group of its own, produces a
    result per record, commits, and exits once its commits cover every record present at
    its start (`ceiling.py`, the Java anchor). Timed from start to exit."""
    output = unique_name(f"bench-{case}-out")
    create_topic(bootstrap, output, PARTITIONS, BROKER_TIME)
    group = unique_name(f"bench-{case}")
    report = workdir / f"{group}.out"
    began = time.monotonic()
    started_ms = time.time() * 1000
    with report.open("w") as stdout:
        proc = subprocess.Popen([*command, bootstrap, topic, output, group], stdout=stdout)
        # CPU from the kernel's accounting of the child (every thread: a JVM's GC and JIT
        # included), peak RSS as the program saw its own (exact however short the run;
        # sampling /proc could miss a tiny one entirely).
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, f"{case} failed, see {report}"
    assert lag(bootstrap, group, topic) == 0, f"{case} exited before committing every record"
    user, system = usage.ru_utime, usage.ru_stime
    cpu = user + system
    peak = float(report.read_text().rsplit("peak_rss_mb=", 1)[1])
    lat = latencies_ms(bootstrap, topic, output, count, started_ms) if measure_latency else []
    return {
        "case": case,
        "api_latency_ms": None,
        "records": count,
        "seconds": round(elapsed, 2),
        "records_per_s": round(count / elapsed),
        "cpu_us_per_record": cpu_us(cpu, count),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "daemon_cpu_s": round(cpu, 2),
        "cpu_sys_s": round(system, 2),
        "peak_rss_mb": round(peak, 1),
    }


def cpu_us(cpu_s: float, count: int) -> float:
    """CPU microseconds per record (user + sys of the whole process)."""
    return round(cpu_s * 1e6 / count, 1)


def run_streamstop(
    case: str,
    bootstrap: str,
    topic: str,
    count: int,
    latency_ms: int,
    workdir: Path,
    measure_latency: bool,
    extra: dict[str, dict[str, Any]] | None = None,
    partitions: int = PARTITIONS,
    source: Path | None = None,
) -> Row:
    """One run of `streamstop run` (of the package under `source`, if given) against
    the fake API at `latency_ms`, until its commits cover every record."""
    output = unique_name("bench-out")
    create_topic(bootstrap, output, partitions, BROKER_TIME)
    group = unique_name("bench")
    peak_sockets = 0

    def done(daemon: Daemon) -> bool:
        nonlocal peak_sockets
        with contextlib.suppress(OSError):
            peak_sockets = max(peak_sockets, sockets(daemon.proc.pid))
        return lag(bootstrap, group, topic) == 0 and daemon.proc.poll() is None

    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", str(latency_ms)) as api:
        config = daemon_config(
            workdir / f"{case}-{latency_ms}.toml", bootstrap, topic, output, group, api.url, extra
        )
        began = time.monotonic()
        started_ms = time.time() * 1000
        daemon = Daemon(config, workdir / f"{case}-{latency_ms}.log", source_env(source))
        try:
            wait_for(lambda: done(daemon), 1800, "every record committed", interval_s=0.25)
            elapsed = time.monotonic() - began
            cpu, peak = proc_stats(daemon.proc.pid)
            system = proc_cpu(daemon.proc.pid)[1]
            api_cpu, _ = proc_stats(api.proc.pid)
            stats = api.stats()
            producers = daemon.metric("streamstop_transactional_producers")
        finally:
            daemon.stop()
    lat = latencies_ms(bootstrap, topic, output, count, started_ms) if measure_latency else []
    requests = max(1, int(stats["requests"]))
    return {
        "case": case,
        "api_latency_ms": latency_ms,
        "records": count,
        "seconds": round(elapsed, 2),
        "records_per_s": round(count / elapsed),
        "cpu_us_per_record": cpu_us(cpu, count),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "api_requests": int(stats["requests"]),
        "mean_batch_fill": round(int(stats["uuids_total"]) / requests / MAX_SIZE, 3),
        "daemon_cpu_s": round(cpu, 2),
        "cpu_sys_s": round(system, 2),
        "api_cpu_s": round(api_cpu, 2),
        "peak_rss_mb": round(peak, 1),
        "partitions": partitions,
        "peak_sockets": peak_sockets,
        "producers": int(producers),
    }


async def produce_paced(bootstrap: str, topic: str, rate: float, seconds: float) -> int:
    """Produce fresh cancel events at `rate` records/s for `seconds`; returns the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    began = time.monotonic()
    futures = []
    try:
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate)
            # One record batch per tick (cheap on the shared CPU), partitions in turn.
            batch = producer.create_batch()
            while sent < due:
                value = orjson.dumps({"messageUuid": str(uuid.uuid4())})
                if batch.append(timestamp=None, key=None, value=value, headers=[]) is None:
                    break  # full: the rest goes in the next tick's batch
                sent += 1
            if batch.record_count():
                partition = (sent // 100) % PARTITIONS
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.sleep(0.01)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def run_paced(
    bootstrap: str,
    latency_ms: int,
    rate: float,
    workdir: Path,
    seconds: float,
    extra: dict[str, dict[str, Any]] | None = None,
    case: str = "streamstop-paced",
) -> Row:
    """Latency at a given input rate: the daemon is caught up, then records arrive live."""
    topic = unique_name("bench-paced-in")
    output = unique_name("bench-paced-out")
    create_topic(bootstrap, topic, PARTITIONS, BROKER_TIME)
    create_topic(bootstrap, output, PARTITIONS, BROKER_TIME)
    group = unique_name("bench-paced")
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", str(latency_ms)) as api:
        config = daemon_config(
            workdir / f"{case}.toml", bootstrap, topic, output, group, api.url, extra
        )
        daemon = Daemon(config, workdir / f"{case}.log")
        try:
            daemon.wait_ready()
            count = asyncio.run(produce_paced(bootstrap, topic, rate, seconds))
            wait_for(lambda: lag(bootstrap, group, topic) == 0, 300, "paced records committed")
        finally:
            daemon.stop()
    lat = latencies_ms(bootstrap, topic, output, count)
    return {
        "case": case,
        "api_latency_ms": latency_ms,
        "input_rate": round(rate),
        "records": count,
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "p99_budget_ms": 500 + latency_ms + 100,
    }


def median_run(runs: list[Row]) -> Row:
    """The run with the median throughput, with every run's throughput alongside."""
    ordered = sorted(runs, key=lambda run: run["records_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs_records_per_s"] = [run["records_per_s"] for run in runs]
    chosen["runs_cpu_us_per_record"] = [run["cpu_us_per_record"] for run in runs]
    chosen["runs_peak_rss_mb"] = [run["peak_rss_mb"] for run in runs]
    return chosen


def measure(cases: Sequence[Callable[[], Row]], repeats: int) -> list[Row]:
    """Every case `repeats` times, interleaved, and the median run of each: on a shared
    2-core box one run of a case can be 30% off, the ceiling's included."""
    rounds: list[list[Row]] = []
    for _ in range(repeats):
        runs = []
        for case in cases:
            runs.append(case())
            print(json.dumps(runs[-1]), flush=True)
        rounds.append(runs)
    return [median_run([runs[i] for runs in rounds]) for i in range(len(cases))]


def against_ceiling(rows: list[Row]) -> list[Row]:
    """Each row with its throughput over that of the ceiling measured on the same records
    (the rows' own ceiling row)."""
    ceiling = next(r for r in rows if r["case"].startswith("ceiling"))["records_per_s"]
    return [{**row, "vs_ceiling": round(row["records_per_s"] / ceiling, 2)} for row in rows]


def markdown(rows: list[Row]) -> str:
    """The results table, one line per row."""
    head = (
        "| case | API latency | records/s | CPU µs/record | vs ceiling | p50 ms | p99 ms | "
        "requests | batch fill | daemon CPU s | API CPU s | peak RSS MB | "
        "every run, records/s |\n|" + "---|" * 13 + "\n"
    )
    lines = []
    for r in rows:
        latency = "" if r["api_latency_ms"] is None else f"{r['api_latency_ms']} ms"
        lines.append(
            f"| {r['case']} | {latency} | {r['records_per_s']:,} | {r['cpu_us_per_record']:.1f}"
            f" | {r['vs_ceiling']:.2f} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])}"
            f" | {r.get('api_requests', '')} | {r.get('mean_batch_fill', '')}"
            f" | {r['daemon_cpu_s']} | {r.get('api_cpu_s', '')} | {r['peak_rss_mb']}"
            f" | {' / '.join(f'{x:,}' for x in r.get('runs_records_per_s', []))} |"
        )
    return head + "\n".join(lines) + "\n"


def cpu_comparison(rows: list[Row]) -> str:
    """One sentence: CPU per record of streamstop at its lowest API latency against the
    Java anchor and the ceiling, from the rows of one record count."""
    by_case: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: r["api_latency_ms"] or 0):
        by_case.setdefault(row["case"].removesuffix("-backlog"), row)
    ours = by_case["streamstop"]["cpu_us_per_record"]
    java = by_case["java-anchor"]["cpu_us_per_record"]
    ceiling = by_case["ceiling"]["cpu_us_per_record"]
    baselines = "".join(
        f", streamstop at {row['baseline']} {row['cpu_us_per_record']:.1f} µs"
        f" (this tree {ours / row['cpu_us_per_record'] - 1:+.0%})"
        for row in by_case.values()
        if row.get("baseline")
    )
    return (
        f"CPU per record on {rows[0]['records']:,} records: streamstop (API at "
        f"{by_case['streamstop']['api_latency_ms']} ms) {ours:.1f} µs, Java anchor {java:.1f} "
        f"µs (streamstop {ours / java:.2f}x the anchor's), ceiling {ceiling:.1f} µs"
        f"{baselines}.\n"
    )


def measure_exactly_once(
    bootstrap: str, rows: list[Row], paced: Row, rate: float, workdir: Path
) -> Row:
    """Exactly-once against at-least-once: throughput at 0 ms (from `rows`), p99 at the
    paced rate, and peak RSS and sockets with one producer per partition of a topic with
    EOS_PARTITIONS partitions."""
    eos = next(r for r in rows if r["case"] == "streamstop-eos")
    alo = next(r for r in rows if r["case"] == "streamstop" and r["api_latency_ms"] == 0)
    paced_eos = run_paced(
        bootstrap,
        paced["api_latency_ms"],
        rate,
        workdir,
        PACED_SECONDS,
        EXACTLY_ONCE,
        "streamstop-eos-paced",
    )
    print(json.dumps(paced_eos), flush=True)
    wide_topic = unique_name("bench-eos-wide")
    create_topic(bootstrap, wide_topic, EOS_PARTITIONS, BROKER_TIME)
    produce(bootstrap, wide_topic, records(RECORDS))
    wide = run_streamstop(
        f"streamstop-eos-{EOS_PARTITIONS}p",
        bootstrap,
        wide_topic,
        RECORDS,
        0,
        workdir,
        False,
        EXACTLY_ONCE,
        EOS_PARTITIONS,
    )
    print(json.dumps(wide), flush=True)
    return {
        "records_per_s": eos["records_per_s"],
        "vs_at_least_once": round(eos["records_per_s"] / alo["records_per_s"], 2),
        "vs_ceiling": eos["vs_ceiling"],
        "throughput_target": EOS_THROUGHPUT_TARGET,
        "peak_rss_mb": eos["peak_rss_mb"],
        "paced": paced_eos,
        "paced_p99_target_ms": None
        if paced["p99_ms"] is None
        else paced["p99_ms"] + EOS_LATENCY_BUDGET_MS,
        "wide": wide,
    }


def exactly_once_summary(eos: Row) -> str:
    """Exactly-once's figures against at-least-once's and their targets."""
    paced, wide = eos["paced"], eos["wide"]
    return (
        f"\nExactly-once at 0 ms: {eos['records_per_s']:,} records/s, "
        f"{eos['vs_at_least_once']:.2f}x at-least-once (target >= {eos['throughput_target']}), "
        f"{eos['vs_ceiling']:.2f}x the ceiling, peak RSS {eos['peak_rss_mb']} MB. At the "
        f"same paced rate ({paced['input_rate']:,} records/s): p99 {ms(paced['p99_ms'])} ms "
        f"(target <= {ms(eos['paced_p99_target_ms'])} ms: at-least-once's p99 + "
        f"{EOS_LATENCY_BUDGET_MS} ms). With {wide['partitions']} input partitions: "
        f"{wide['producers']} producers, peak {wide['peak_sockets']} sockets, peak RSS "
        f"{wide['peak_rss_mb']} MB, {wide['records_per_s']:,} records/s.\n"
    )


def plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = [r for r in rows if r["case"] == "streamstop"]
    xs = [r["api_latency_ms"] for r in cases]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(xs, [r["records_per_s"] for r in cases], "o-", label="records/s")
    by_case = {r["case"]: r for r in rows}
    left.axhline(
        by_case["ceiling"]["records_per_s"], linestyle="--", color="gray", label="ceiling (no HTTP)"
    )
    left.axhline(
        by_case["java-anchor"]["records_per_s"],
        linestyle=":",
        color="tab:green",
        label="Java anchor (no HTTP)",
    )
    left.set_xlabel("stop API latency (ms)")
    left.set_ylabel("records/s")
    right = left.twinx()
    right.plot(xs, [r["p99_ms"] for r in cases], "s-", color="tab:red", label="p99 ms")
    right.set_ylabel("p99 time to result in the backlog run (ms)")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    fig.legend(loc="upper center", ncols=4, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    bootstrap = sys.argv[1]
    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp/streamstop-bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    anchor = compile_anchor()
    ceiling = [sys.executable, str(REPO / "benchmarks" / "ceiling.py")]
    topic = unique_name("bench-in")
    create_topic(bootstrap, topic, PARTITIONS, BROKER_TIME)
    produce(bootstrap, topic, records(RECORDS))
    assert sum(end_offsets(bootstrap, topic).values()) == RECORDS
    print(f"pre-produced {RECORDS:,} records to {topic}", flush=True)

    def program(case: str, command: list[str], topic: str, count: int, lat: bool) -> Row:
        return run_program(case, command, bootstrap, topic, count, workdir, lat)

    def daemon(
        case: str,
        topic: str,
        count: int,
        latency: int,
        lat: bool,
        extra: dict[str, dict[str, Any]] | None = None,
        source: Path | None = None,
    ) -> Row:
        row = run_streamstop(
            case, bootstrap, topic, count, latency, workdir, lat, extra, source=source
        )
        if source is not None:
            row["baseline"] = BASELINE  # another tree's streamstop, for the CPU sentence
        return row

    cases: list[Callable[[], Row]] = [
        functools.partial(program, "ceiling", ceiling, topic, RECORDS, True),
        functools.partial(program, "java-anchor", anchor, topic, RECORDS, True),
    ]
    cases += [
        functools.partial(daemon, "streamstop", topic, RECORDS, latency, True)
        for latency in LATENCIES_MS
    ]
    cases.append(functools.partial(daemon, "streamstop-eos", topic, RECORDS, 0, True, EXACTLY_ONCE))
    rows = against_ceiling(measure(cases, REPEATS))
    saturating = next(
        r for r in rows if r["case"] == "streamstop" and r["api_latency_ms"] == PACED_LATENCY_MS
    )
    rate = saturating["records_per_s"] / 2
    paced = run_paced(bootstrap, PACED_LATENCY_MS, rate, workdir, PACED_SECONDS)
    print(json.dumps(paced), flush=True)
    exactly_once = measure_exactly_once(bootstrap, rows, paced, rate, workdir)
    backlog: list[Row] = []
    memory: Row | None = None
    if BACKLOG_RECORDS:
        big = unique_name("bench-backlog")
        create_topic(bootstrap, big, PARTITIONS, BROKER_TIME)
        for start in range(0, BACKLOG_RECORDS, 200_000):
            produce(bootstrap, big, records(min(200_000, BACKLOG_RECORDS - start)))
        # Long enough that start-up (a JVM's above all) does not decide the comparison;
        # no latency columns (reading back the whole output would dwarf the run).
        cases = [
            functools.partial(program, "ceiling-backlog", ceiling, big, BACKLOG_RECORDS, False),
            functools.partial(program, "java-anchor-backlog", anchor, big, BACKLOG_RECORDS, False),
        ]
        if BASELINE:
            source = baseline_source(BASELINE, workdir)
            case = f"streamstop-{BASELINE.replace('/', '-')}-backlog"
            cases.append(
                functools.partial(daemon, case, big, BACKLOG_RECORDS, 0, False, source=source)
            )
        cases.append(
            functools.partial(daemon, "streamstop-backlog", big, BACKLOG_RECORDS, 0, False)
        )
        backlog = against_ceiling(measure(cases, BACKLOG_REPEATS))
        memory = dict(backlog[-1])  # this tree's
        # Against the same case on RECORDS records (0 ms, else the lowest latency
        # measured): the median of its runs' peaks.
        small = min(
            (r for r in rows if r["case"] == "streamstop"), key=lambda r: int(r["api_latency_ms"])
        )
        memory["baseline_peak_rss_mb"] = statistics.median(small["runs_peak_rss_mb"])
        memory["vs_baseline"] = round(memory["peak_rss_mb"] / memory["baseline_peak_rss_mb"], 3)
        print(json.dumps(memory), flush=True)
    table = markdown(rows + backlog)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "records": RECORDS,
                "backlog_records": BACKLOG_RECORDS,
                "cpus": os.cpu_count(),
                "cases": rows,
                "backlog": backlog,
                "paced": paced,
                "memory": memory,
                "exactly_once": exactly_once,
            },
            indent=2,
        )
        + "\n"
    )
    table += "\n" + cpu_comparison(rows)
    if backlog:
        table += "\n" + cpu_comparison(backlog)
    table += (
        f"\nAt half the saturating rate ({paced['input_rate']:,} records/s, API latency "
        f"{paced['api_latency_ms']} ms): append-to-result p50 {ms(paced['p50_ms'])} ms, "
        f"p99 {ms(paced['p99_ms'])} ms (target <= {paced['p99_budget_ms']} ms).\n"
    )
    table += exactly_once_summary(exactly_once)
    if memory:
        table += (
            f"\nBacklog of {BACKLOG_RECORDS:,} records: peak RSS {memory['peak_rss_mb']} MB, "
            f"{memory['vs_baseline'] - 1:+.1%} over the {RECORDS:,}-record case at "
            f"{small['api_latency_ms']} ms "
            f"({memory['baseline_peak_rss_mb']} MB, the median of "
            f"{' / '.join(str(x) for x in small['runs_peak_rss_mb'])}; target <= +10%).\n"
        )
    (RESULTS / "latest.md").write_text(table)
    plotted = plot(rows, RESULTS / "latest.png")
    print(table)
    print(f"wrote {RESULTS}/latest.json, latest.md" + (", latest.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
