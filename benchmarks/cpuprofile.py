"""Where `streamstop run` spends its CPU per record: py-spy on a pre-produced backlog.

Pre-produces PROFILE_RECORDS cancel events (default 1,000,000) over 6 partitions, runs the
daemon at its defaults against the fake API at 0 ms, and samples it with two py-spy
recorders attached from the moment it listens until its commits cover every record: one
writes the flame graph (SVG), the other the same run's collapsed stacks, which are broken
down here by stage. Writes OUT_DIR/profile-<date>.svg and .txt (the stacks) and prints the
stage table (markdown). Needs py-spy (in the `bench` extra, which `make bench` installs)
and ptrace rights (root).

Usage: profile.py BOOTSTRAP [OUT_DIR]  (default benchmarks/results)
"""

from __future__ import annotations

import collections
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from bench import BROKER_TIME, PARTITIONS, REPO, daemon_config, proc_cpu, records
from daemon_proc import TEST_TOKEN, Daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import create_topic, lag, produce, unique_name

RECORDS = int(os.environ.get("PROFILE_RECORDS", "1000000"))
RATE_HZ = int(os.environ.get("PROFILE_RATE_HZ", "100"))

# Stages, tried against each sample's frames from the innermost out: the first frame that
# matches a stage names it. Frames of aiokafka's record code and of the standard library
# match nothing, so they count for the code that called them; the event loop counts when
# nothing above its entry frame matched.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start-up (imports, config)", ("<frozen importlib", "streamstop/config/")),
    ("logging (structlog)", ("structlog/", "streamstop/logs.py", "/logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/", "streamstop/metrics.py")),
    ("our decode + validation (decode_value)", ("streamstop/core/decode.py",)),
    ("batcher", ("streamstop/core/batcher.py",)),
    ("offset tracker", ("streamstop/core/offsets.py",)),
    ("result building + encoding (build_result)", ("streamstop/core/results.py",)),
    ("aiokafka producer: batch building, send", ("aiokafka/producer/",)),
    ("publisher: grouping, batching loop", ("streamstop/publisher.py",)),
    ("aiokafka consumer: fetch + record objects", ("aiokafka/consumer/",)),
    ("aiokafka network + protocol", ("aiokafka/",)),
    ("stop API: response interpretation", ("streamstop/core/interpret.py",)),
    ("stop API: HTTP client", ("aiohttp/", "streamstop/stopclient.py", "streamstop/stopper.py")),
    ("pipeline: _take per-record loop (Rec, calls)", ("._take (streamstop/pipeline.py",)),
    ("results per-record loop (OutMessage)", ("results (streamstop/",)),
    ("pipeline: _done per-record loop", ("._done (streamstop/pipeline.py",)),
]
OUR_CODE = "(streamstop/"
LOOP_ENTRY = ("asyncio/runners.py", "uvloop/__init__.py")
EVENT_LOOP = "event loop (asyncio, uvloop)"
OTHER = "other"


def stage_of(frames: list[str]) -> str:
    """The stage a sample belongs to (`frames` outermost first, as py-spy writes them)."""
    # Tasks and callbacks sit right on the loop's entry frame: the frames below it (the
    # CLI, the daemon's `run`) are on every stack and say nothing.
    entries = [i for i, frame in enumerate(frames) if any(m in frame for m in LOOP_ENTRY)]
    above = frames[entries[-1] + 1 :] if entries else frames
    for frame in reversed(above):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
        # The rest of our code by module, whatever its shape after a reshape.
        if OUR_CODE in frame:
            return f"streamstop: {frame.split(OUR_CODE, 1)[1].split(':', 1)[0]} (other)"
    return EVENT_LOOP if entries else OTHER


def breakdown(collapsed: Iterable[str]) -> collections.Counter[str]:
    """Samples per stage, from py-spy's raw (collapsed stack) lines."""
    samples: collections.Counter[str] = collections.Counter()
    for line in collapsed:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack:
            samples[stage_of(stack.split(";"))] += int(count)
    return samples


def table(samples: collections.Counter[str], cpu_us_per_record: float) -> str:
    """Stages by share of the samples, with the CPU µs per record that share stands for."""
    total = sum(samples.values())
    lines = ["| stage | samples | share | CPU µs/record |", "|---|---|---|---|"]
    for stage, count in samples.most_common():
        share = count / total
        lines.append(f"| {stage} | {count} | {share:.1%} | {share * cpu_us_per_record:.2f} |")
    lines.append(f"| total | {total} | 100% | {cpu_us_per_record:.2f} |")
    return "\n".join(lines) + "\n"


def record(pid: int, fmt: str, out: Path) -> subprocess.Popen[bytes]:
    """A py-spy recorder on `pid`; non-blocking, so it never pauses the daemon."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--nonblocking"]
    command += ["--function", "--format", fmt, "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> int:
    bootstrap = sys.argv[1]
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"profile-{datetime.date.today().isoformat()}"
    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp/streamstop-bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    topic = unique_name("profile-in")
    output = unique_name("profile-out")
    create_topic(bootstrap, topic, PARTITIONS, BROKER_TIME)
    create_topic(bootstrap, output, PARTITIONS, BROKER_TIME)
    for start in range(0, RECORDS, 200_000):
        produce(bootstrap, topic, records(min(200_000, RECORDS - start)))
    group = unique_name("profile")
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "0") as api:
        config = daemon_config(workdir / "profile.toml", bootstrap, topic, output, group, api.url)
        daemon = Daemon(config, workdir / "profile.log")
        try:
            # Listening comes before the Kafka clients start: no record is taken yet.
            daemon.wait_port()
            pid = daemon.proc.pid
            began_user, began_sys = proc_cpu(pid)
            began = time.monotonic()
            recorders = [record(pid, "flamegraph", stem.with_suffix(".svg"))]
            recorders.append(record(pid, "raw", stem.with_suffix(".txt")))
            wait_for(lambda: lag(bootstrap, group, topic) == 0, 1800, "every record committed")
            user, system = proc_cpu(pid)
            user, system = user - began_user, system - began_sys
            cpu = user + system
            elapsed = time.monotonic() - began
            for recorder in recorders:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            for recorder in recorders:
                _, errors = recorder.communicate(timeout=120)
                assert recorder.returncode == 0, errors.decode()
        finally:
            daemon.stop()
    cpu_us = cpu * 1e6 / RECORDS
    samples = breakdown(stem.with_suffix(".txt").read_text().splitlines())
    # py-spy samples a thread while it runs or waits for a core: samples beyond the CPU
    # time measure how long the daemon waited for one on the shared box.
    sampled_s = sum(samples.values()) / RATE_HZ
    print(
        f"{RECORDS:,} records in {elapsed:.1f} s ({RECORDS / elapsed:,.0f} records/s), daemon "
        f"CPU {cpu:.1f} s = {cpu_us:.1f} µs/record ({system / cpu:.0%} of it in the kernel); "
        f"samples at {RATE_HZ} Hz: {sampled_s:.1f} s running or waiting for a core\n"
    )
    print(table(samples, cpu_us))
    print(f"wrote {stem}.svg and {stem}.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
