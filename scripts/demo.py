"""`make demo`: the daemon end to end on a local broker and the fake stop API.

Starts `streamstop fake-api`, creates the topics with `streamstop topics create` and
starts `streamstop run` (Kafka is started by the Makefile), produces 50,000 cancel events
(some invalid, some duplicates), shows progress until every offset is committed, prints
results by status, the DLQ count, one result event, throughput and time-to-result, and
the settings to change for a real cluster; then stops everything it started, by pid.

    scripts/demo.py BOOTSTRAP [--secure DIR]

With `--secure DIR` (`make demo SECURE=1`) the broker is the secured one of
`scripts/kafka.sh up-secure DIR`: the daemon logs in over SASL_SSL with SCRAM-SHA-512,
verifying the broker's certificate against the test CA; the demo itself produces and reads
back through BOOTSTRAP, the broker's PLAINTEXT listener.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

RECORDS = int(os.environ.get("DEMO_RECORDS", "50000"))
NEXT_STEPS = """
next: point it at your cluster (docs/cluster.md walks through it). The settings that matter:
  kafka.bootstrap_servers   your brokers, e.g. STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS=kafka-1:9092
  kafka.security_protocol   and sasl_mechanism, sasl_username, sasl_password_file for SASL
  api.url, api.token_file   the stop API and its token (or STREAMSTOP_API__TOKEN)
then (in this clone: source .venv/bin/activate, or .venv/bin/streamstop):
  streamstop check-config --show-origin; streamstop topics create; streamstop run"""
PARTITIONS = 6
TOKEN = "demo-token"


def make_events(count: int, rng: random.Random) -> list[bytes]:
    """Mostly valid JSON events; duplicates, upper case, bare text and ~3% invalid."""
    events: list[bytes] = []
    seen: list[str] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.03:
            events.append(rng.choice([b"", b"not a uuid", b'{"messageUuid": 42}', b"\xff\xfe"]))
            continue
        if roll < 0.08 and seen:
            value = rng.choice(seen)
        else:
            value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            seen.append(value)
        if roll < 0.15:
            events.append(value.upper().encode())
        else:
            events.append(orjson.dumps({"messageUuid": value, "requestId": f"demo-{i}"}))
    return events


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, partition=i % PARTITIONS) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for p in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def record_count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, expected: int) -> list[object]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[object] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def wait_line(log: Path, event: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args!r} exited early; see {log}")
        for line in log.read_text().splitlines():
            if event in line:
                parsed: dict[str, object] = json.loads(line)
                return parsed
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {event} in {log}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def secure_kafka_config(state_dir: Path) -> str:
    """The [kafka] keys that reach the SASL_SSL listener of `scripts/kafka.sh up-secure`."""
    lines = (state_dir / "listeners").read_text().splitlines()
    listeners = {name: address for name, _, address in (line.split() for line in lines)}
    keys = {
        "bootstrap_servers": listeners["SASL_SSL"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "streamstop",
        "sasl_password_file": str(state_dir / "users" / "streamstop"),
        "ssl_cafile": str(state_dir / "tls" / "ca.crt"),
    }
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description="streamstop end to end on a local broker")
    parser.add_argument("bootstrap", help="the broker's PLAINTEXT listener, host:port")
    parser.add_argument("--secure", type=Path, metavar="DIR", help="kafka.sh up-secure state")
    args = parser.parse_args()
    bootstrap: str = args.bootstrap
    connection = f'bootstrap_servers = "{bootstrap}"\n'
    if args.secure is not None:
        connection = secure_kafka_config(args.secure.resolve())
    run = f"demo-{int(time.time())}"
    topics = {"input": f"{run}-requests", "output": f"{run}-results", "dlq": f"{run}-dlq"}
    workdir = Path(tempfile.mkdtemp(prefix="streamstop-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTOP_")}
    exe = [sys.executable, "-m", "streamstop"]
    fake = start(
        [*exe, "fake-api", "--port", "0", "--token", TOKEN, "--latency-ms", "20"],
        workdir / "fake-api.log",
        env,
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        api = wait_line(workdir / "fake-api.log", "fake_api_listening", fake)
        config = workdir / "streamstop.toml"
        config.write_text(
            f'[kafka]\n{connection}input_topic = "{topics["input"]}"\n'
            f'output_topic = "{topics["output"]}"\ndlq_topic = "{topics["dlq"]}"\n'
            f'group_id = "{run}"\n[api]\nurl = "{api["url"]}"\ntoken = "{TOKEN}"\n'
            "[observability]\nhttp_port = 0\n"
        )
        create = [*exe, "topics", "create", "--config", str(config)]
        creating = await asyncio.create_subprocess_exec(
            *create, "--partitions", str(PARTITIONS), stdout=PIPE, stderr=STDOUT, env=env
        )
        report, _ = await creating.communicate()
        if creating.returncode != 0:
            sys.exit(f"streamstop topics create failed:\n{report.decode()}")
        print(f"topics created: streamstop topics create --partitions {PARTITIONS}")
        daemon = start([*exe, "run", "--config", str(config)], workdir / "daemon.log", env)
        wait_line(workdir / "daemon.log", '"started"', daemon)
        print(f"fake API at {api['url']}; daemon logs in {workdir}/daemon.log")
        if args.secure is not None:
            print(f"the daemon reaches Kafka over SASL_SSL, SCRAM-SHA-512 (config: {config})")

        events = make_events(RECORDS, random.Random(7))
        began = time.monotonic()
        await produce(bootstrap, topics["input"], events)
        print(f"produced {len(events):,} cancel events to {topics['input']}")
        while True:
            done = await committed_total(bootstrap, run, topics["input"])
            print(f"  committed {done:>7,} / {len(events):,}", flush=True)
            if done >= len(events):
                break
            if daemon.poll() is not None:
                sys.exit(f"daemon exited with {daemon.returncode}; see {workdir}/daemon.log")
            await asyncio.sleep(1)
        elapsed = time.monotonic() - began

        results = await read_all(bootstrap, topics["output"], len(events))
        inputs = {
            (r.partition, r.offset): r.timestamp  # type: ignore[attr-defined]
            for r in await read_all(bootstrap, topics["input"], len(events))
        }
        by_status: collections.Counter[str] = collections.Counter()
        latencies: list[float] = []
        sample: dict[str, object] | None = None
        for record in results:
            value = orjson.loads(record.value)  # type: ignore[attr-defined]
            by_status[value["status"]] += 1
            if sample is None and value["status"] == "stopped" and value["requestId"]:
                sample = value
            source = value["source"]
            appended = inputs.get((source["partition"], source["offset"]))
            if appended is not None:
                latencies.append(record.timestamp - appended)  # type: ignore[attr-defined]
        print(f"\n{'status':<16}{'results':>10}")
        for status, count in by_status.most_common():
            print(f"{status:<16}{count:>10,}")
        print(f"{'total':<16}{sum(by_status.values()):>10,}\n")
        dlq = await record_count(bootstrap, topics["dlq"])
        print(f"DLQ             {dlq:,} copies of invalid input in {topics['dlq']}")
        print(f"throughput      {len(events) / elapsed:,.0f} records/s (produce to last commit)")
        print(
            f"time-to-result  p50 {percentile(latencies, 0.5):,.0f} ms, "
            f"p99 {percentile(latencies, 0.99):,.0f} ms (input append to result append)"
        )
        print(f"\none result event from {topics['output']}:")
        print(json.dumps(sample, indent=2))
        print(NEXT_STEPS)
        return 0
    finally:
        codes = []
        if daemon is not None:
            codes.append(("daemon", stop(daemon)))
        codes.append(("fake-api", stop(fake)))
        print("stopped: " + ", ".join(f"{name} exit {code}" for name, code in codes))


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
