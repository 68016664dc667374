"""Does a pod pay for a second core? One `streamstop run` against two in one consumer group.

A pod runs one event loop, so it uses one core. The other way to use two is two daemons
in one pod, each taking half of the group's partitions. This pre-produces TWO_RECORDS
cancel events (default 1,000,000) over 6 partitions and times, interleaved over
TWO_REPEATS rounds (default 3), each from start until the group's committed offsets
cover every record, with the fake API at 0 ms: one daemon; two daemons started together
in one group. Prints per round and the medians: records/s, CPU µs per record (both
processes' user + sys together) and each process's peak RSS. A measurement, not a
feature.

Usage: two_processes.py BOOTSTRAP
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench import BROKER_TIME, PARTITIONS, cpu_us, daemon_config, proc_stats, records
from daemon_proc import TEST_TOKEN, Daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import create_topic, lag, produce, unique_name

RECORDS = int(os.environ.get("TWO_RECORDS", "1000000"))
REPEATS = int(os.environ.get("TWO_REPEATS", "3"))


def run(bootstrap: str, topic: str, processes: int, workdir: Path) -> dict[str, object]:
    """`processes` daemons in one fresh group until its commits cover every record."""
    output = unique_name("two-out")
    create_topic(bootstrap, output, PARTITIONS, BROKER_TIME)
    group = unique_name("two")
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "0") as api:
        daemons: list[Daemon] = []
        began = time.monotonic()
        try:
            for n in range(processes):
                config = daemon_config(
                    workdir / f"two-{n}.toml", bootstrap, topic, output, group, api.url
                )
                daemons.append(Daemon(config, workdir / f"two-{n}.log"))
            wait_for(
                lambda: (
                    lag(bootstrap, group, topic) == 0
                    and all(d.proc.poll() is None for d in daemons)
                ),
                1800,
                "every record committed",
                interval_s=0.25,
            )
            elapsed = time.monotonic() - began
            stats = [proc_stats(d.proc.pid) for d in daemons]
        finally:
            for daemon in daemons:
                daemon.stop()
    return {
        "processes": processes,
        "records_per_s": round(RECORDS / elapsed),
        "cpu_us_per_record": cpu_us(sum(cpu for cpu, _ in stats), RECORDS),
        "peak_rss_mb": [round(peak, 1) for _, peak in stats],
    }


def main() -> int:
    bootstrap = sys.argv[1]
    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp/streamstop-bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    topic = unique_name("two-in")
    create_topic(bootstrap, topic, PARTITIONS, BROKER_TIME)
    for start in range(0, RECORDS, 200_000):
        produce(bootstrap, topic, records(min(200_000, RECORDS - start)))
    rows: dict[int, list[dict[str, object]]] = {1: [], 2: []}
    for _ in range(REPEATS):
        for processes in (1, 2):
            row = run(bootstrap, topic, processes, workdir)
            print(json.dumps(row), flush=True)
            rows[processes].append(row)
    for processes, runs in rows.items():
        rate = statistics.median(float(str(r["records_per_s"])) for r in runs)
        cpu = statistics.median(float(str(r["cpu_us_per_record"])) for r in runs)
        print(f"{processes} process(es): median {rate:,.0f} records/s, {cpu} CPU µs/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
