"""`make bench` keeps working: the harness end to end on a tiny number of records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.kafka
def test_bench_harness_runs_on_a_tiny_input(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENCH_RECORDS": "2000",
        "BENCH_REPEATS": "1",
        "BENCH_LATENCIES_MS": "0,50",
        "BENCH_MEMORY_RECORDS": "3000",
        "BENCH_PACED_SECONDS": "2",
        "BENCH_RESULTS_DIR": str(tmp_path / "results"),
        "BENCH_WORKDIR": str(tmp_path / "work"),
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
    assert [c["case"] for c in cases] == ["ceiling", "streamstop", "streamstop"]
    for case in cases:
        assert case["records_per_s"] > 0
        assert case["peak_rss_mb"] > 0
    assert all(c["api_requests"] >= 1 for c in cases[1:])
    memory = report["memory"]
    assert memory["records"] == 3000
    assert memory["baseline_peak_rss_mb"] == cases[1]["peak_rss_mb"]
    assert memory["vs_baseline"] == pytest.approx(
        memory["peak_rss_mb"] / memory["baseline_peak_rss_mb"], abs=0.001
    )
    assert report["paced"]["records"] > 0
    table = (tmp_path / "results" / "latest.md").read_text()
    assert "| streamstop | 50 ms |" in table
    assert "Backlog of 3,000 records: peak RSS" in table
