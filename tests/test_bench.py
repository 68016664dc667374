"""`make bench` keeps working: its table logic, the Java anchor's output, and the harness
end to end on a tiny number of records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench
import cpuprofile
import orjson
import pytest
from kafkahelp import MakeTopic, Message, consume_all, lag, produce, unique_name

from streamstop.core.results import Resolution, Status, build_result

REPO = Path(__file__).resolve().parent.parent


def row(case: str, records_per_s: int, cpu_us: float, **extra: Any) -> dict[str, Any]:
    """A measured row as the harness records it (program rows have no API columns)."""
    return {
        "case": case,
        "api_latency_ms": None,
        "records": 200_000,
        "records_per_s": records_per_s,
        "cpu_us_per_record": cpu_us,
        "p50_ms": None,
        "p99_ms": None,
        "daemon_cpu_s": round(cpu_us * 200_000 / 1e6, 2),
        "peak_rss_mb": 50.0,
        **extra,
    }


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_cpu_per_record_is_the_process_cpu_over_the_records() -> None:
    assert bench.cpu_us(4.9, 200_000) == 24.5
    assert bench.cpu_us(17.04, 1_000_000) == 17.0


def test_table_shows_cpu_per_record_next_to_records_per_second() -> None:
    rows = bench.against_ceiling(
        [
            row("ceiling", 25_000, 38.04),
            row("java-anchor", 77_000, 17.0),
            row("streamstop", 40_000, 24.26, api_latency_ms=0, api_requests=21),
        ]
    )
    head, rule, *lines = bench.markdown(rows).splitlines()
    columns = cells(head)
    assert columns[columns.index("records/s") + 1] == "CPU µs/record"
    assert len(cells(rule)) == len(columns)
    by_case = {cells(line)[0]: dict(zip(columns, cells(line), strict=True)) for line in lines}
    assert by_case["java-anchor"]["CPU µs/record"] == "17.0"
    assert by_case["java-anchor"]["records/s"] == "77,000"
    assert by_case["java-anchor"]["vs ceiling"] == "3.08"
    assert by_case["streamstop"]["CPU µs/record"] == "24.3"
    assert by_case["streamstop"]["API latency"] == "0 ms"
    assert by_case["ceiling"]["CPU µs/record"] == "38.0"


def test_backlog_rows_compare_with_the_ceiling_on_the_same_records() -> None:
    small = bench.against_ceiling([row("ceiling", 20_000, 40.0), row("streamstop", 30_000, 25.0)])
    big = bench.against_ceiling(
        [row("ceiling-backlog", 40_000, 30.0), row("streamstop-backlog", 30_000, 25.0)]
    )
    assert [r["vs_ceiling"] for r in small] == [1.0, 1.5]
    assert [r["vs_ceiling"] for r in big] == [1.0, 0.75]


def test_median_run_reports_the_cpu_of_the_median_throughput_run() -> None:
    runs = [row("streamstop", 30_000, 31.0), row("streamstop", 40_000, 24.0)]
    runs.append(row("streamstop", 35_000, 26.5))
    chosen = bench.median_run(runs)
    assert chosen["records_per_s"] == 35_000
    assert chosen["cpu_us_per_record"] == 26.5
    assert chosen["runs_records_per_s"] == [30_000, 40_000, 35_000]
    assert chosen["runs_cpu_us_per_record"] == [31.0, 24.0, 26.5]


def test_cpu_comparison_takes_streamstop_at_its_lowest_api_latency() -> None:
    rows = [
        row("ceiling-backlog", 25_000, 38.0),
        row("java-anchor-backlog", 77_000, 17.0),
        row("streamstop-backlog", 30_000, 21.0, api_latency_ms=200),
        row("streamstop-backlog", 40_000, 25.5, api_latency_ms=0),
    ]
    sentence = bench.cpu_comparison(rows)
    assert "streamstop (API at 0 ms) 25.5 µs" in sentence
    assert "Java anchor 17.0 µs (streamstop 1.50x the anchor's)" in sentence
    assert "ceiling 38.0 µs" in sentence


def test_cpu_comparison_names_a_baseline_measured_in_the_same_run() -> None:
    rows = [
        row("ceiling-backlog", 25_000, 19.0),
        row("java-anchor-backlog", 77_000, 12.0),
        row("streamstop-main-backlog", 40_000, 15.0, api_latency_ms=0, baseline="main"),
        row("streamstop-backlog", 50_000, 10.5, api_latency_ms=0),
    ]
    sentence = bench.cpu_comparison(rows)
    assert "streamstop (API at 0 ms) 10.5 µs, Java anchor 12.0 µs" in sentence
    assert sentence.endswith("streamstop at main 15.0 µs (this tree -30%).\n")


def test_cpu_comparison_does_not_take_the_exactly_once_case_for_a_baseline() -> None:
    rows = [
        row("ceiling", 25_000, 19.0),
        row("java-anchor", 77_000, 24.0),
        row("streamstop", 50_000, 12.0, api_latency_ms=0),
        row("streamstop-eos", 45_000, 14.0, api_latency_ms=0),
    ]
    sentence = bench.cpu_comparison(rows)
    assert sentence.endswith("ceiling 19.0 µs.\n"), sentence


def test_a_baseline_runs_the_package_as_its_git_ref_has_it(tmp_path: Path) -> None:
    source = bench.baseline_source("HEAD", tmp_path)
    committed = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:streamstop/core/decode.py"],
        capture_output=True,
        check=True,
    ).stdout
    assert (source / "streamstop" / "core" / "decode.py").read_bytes() == committed
    assert bench.baseline_source("HEAD", tmp_path) == source  # extracted once
    # Run from the repository, where the working tree's package would go first.
    imported = subprocess.run(
        [sys.executable, "-c", "import streamstop; print(streamstop.__file__)"],
        env={**os.environ, **(bench.source_env(source) or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(imported) == source / "streamstop" / "__init__.py"


BASE = "main (streamstop/cli.py:54);run (streamstop/app.py:41);Runner.run (asyncio/runners.py:86)"


def test_profile_stages_go_to_the_innermost_code_we_can_name() -> None:
    consume = f"{BASE};Pipeline.consume (streamstop/pipeline.py:161)"
    raw = [
        # aiokafka's record classes count for the consumer that builds them.
        f"{consume};AIOKafkaConsumer.getmany (aiokafka/consumer/consumer.py:1147);"
        "PartitionRecords._consumer_record (aiokafka/consumer/fetcher.py:300);"
        "__init__ (<string>:2) 7",
        f"{consume};Pipeline._take (streamstop/pipeline.py:203);"
        "decode_value (streamstop/core/decode.py:52) 5",
        f"{consume};Pipeline._take (streamstop/pipeline.py:203) 3",
        # Waiting inside asyncio for aiokafka counts for aiokafka.
        "Sender._send_produce_req (aiokafka/producer/sender.py:277);"
        "StreamWriter.write (asyncio/streams.py:342) 2",
        f"{BASE} 4",
        # The rest of our code by module.
        f"{consume};Pipeline._dispatch (streamstop/pipeline.py:280);uuid4 (uuid.py:721) 6",
    ]
    samples = cpuprofile.breakdown(raw)
    assert samples == {
        "aiokafka consumer: fetch + record objects": 7,
        "our decode + validation (decode_value)": 5,
        "pipeline: _take per-record loop (Rec, calls)": 3,
        "aiokafka producer: batch building, send": 2,
        "event loop (asyncio, uvloop)": 4,
        "streamstop: pipeline.py (other)": 6,
    }


def test_profile_table_turns_shares_into_cpu_per_record() -> None:
    samples = cpuprofile.breakdown([f"{BASE};decode_value (streamstop/core/decode.py:52) 1"])
    samples["batcher"] = 3
    lines = cpuprofile.table(samples, 20.0).splitlines()
    assert lines[2] == "| batcher | 3 | 75.0% | 15.00 |"
    assert lines[3] == "| our decode + validation (decode_value) | 1 | 25.0% | 5.00 |"
    assert lines[-1] == "| total | 4 | 100% | 20.00 |"


@pytest.mark.kafka
def test_java_anchor_writes_the_results_streamstop_writes(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=2)
    output = make_topic(partitions=2)
    upper = "2A28D557-22A1-4BE6-8908-1481723043DD"
    values = [orjson.dumps({"messageUuid": upper, "requestId": "r-1"})]
    values += [orjson.dumps({"messageUuid": f"00000000-0000-4000-8000-{i:012d}"}) for i in range(9)]
    values.append(b"not json")
    produce(kafka_bootstrap, topic, [Message(v, partition=i % 2) for i, v in enumerate(values)])
    group = unique_name("anchor")
    done = subprocess.run(
        [*bench.compile_anchor(), kafka_bootstrap, topic, output, group],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert float(done.stdout.rsplit("peak_rss_mb=", 1)[1]) > 0
    assert lag(kafka_bootstrap, group, topic) == 0
    results = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, output, len(values))]
    assert len(results) == len(values)
    expected_keys = list(
        orjson.loads(
            build_result(
                uuid=None,
                resolution=Resolution(Status.STOPPED, 200, None, 1),
                request_id=None,
                topic=topic,
                partition=0,
                offset=0,
                batch_id=None,
                received_at="",
                completed_at="",
            )
        )
    )
    assert all(list(result) == expected_keys for result in results)
    assert sorted((r["source"]["partition"], r["source"]["offset"]) for r in results) == sorted(
        (i % 2, i // 2) for i in range(len(values))
    )
    first = next(r for r in results if r["requestId"] == "r-1")
    assert first["messageUuid"] == upper.lower()
    assert first["status"] == "stopped"
    invalid = [r for r in results if r["status"] == "invalid"]
    assert len(invalid) == 1
    assert invalid[0]["messageUuid"] is None


@pytest.mark.kafka
def test_bench_harness_runs_on_a_tiny_input(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENCH_RECORDS": "2000",
        "BENCH_REPEATS": "1",
        "BENCH_LATENCIES_MS": "0,50",
        "BENCH_BACKLOG_RECORDS": "3000",
        "BENCH_PACED_SECONDS": "2",
        "BENCH_RESULTS_DIR": str(tmp_path / "results"),
        "BENCH_WORKDIR": str(tmp_path / "work"),
        "BENCH_BASELINE": "HEAD",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), kafka_bootstrap],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "latest.json").read_text())
    cases = report["cases"]
    assert [c["case"] for c in cases] == [
        "ceiling",
        "java-anchor",
        "streamstop",
        "streamstop",
        "streamstop-eos",
    ]
    backlog = report["backlog"]
    assert [c["case"] for c in backlog] == [
        "ceiling-backlog",
        "java-anchor-backlog",
        "streamstop-HEAD-backlog",
        "streamstop-backlog",
    ]
    for case in cases + backlog:
        assert case["records_per_s"] > 0
        assert case["cpu_us_per_record"] > 0
        assert case["peak_rss_mb"] > 0
    assert all(c["records"] == 3000 for c in backlog)
    assert all(c["api_requests"] >= 1 for c in cases[2:])
    memory = report["memory"]
    assert memory["records"] == 3000
    assert memory["baseline_peak_rss_mb"] == cases[2]["peak_rss_mb"]
    assert memory["vs_baseline"] == pytest.approx(
        memory["peak_rss_mb"] / memory["baseline_peak_rss_mb"], abs=0.001
    )
    assert report["paced"]["records"] > 0
    eos = report["exactly_once"]
    assert eos["vs_at_least_once"] == pytest.approx(
        cases[4]["records_per_s"] / cases[2]["records_per_s"], abs=0.01
    )
    assert eos["paced"]["case"] == "streamstop-eos-paced"
    assert eos["paced"]["input_rate"] == report["paced"]["input_rate"]
    assert eos["paced_p99_target_ms"] == report["paced"]["p99_ms"] + 100
    wide = eos["wide"]
    assert (wide["partitions"], wide["producers"]) == (24, 24)
    assert wide["peak_sockets"] >= 24  # at least one connection per producer
    table = (tmp_path / "results" / "latest.md").read_text()
    assert "| streamstop | 50 ms |" in table
    assert "| java-anchor-backlog |" in table
    assert "CPU per record on 3,000 records: streamstop (API at 0 ms)" in table
    assert "streamstop at HEAD" in table
    assert "Backlog of 3,000 records: peak RSS" in table
    assert "Exactly-once at 0 ms:" in table
    assert "With 24 input partitions: 24 producers" in table
