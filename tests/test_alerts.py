"""The chart's stall alerts, proven with `promtool test rules` on series scraped from a
real daemon: quiet while every partition progresses, `StreamstopNoProgress` for exactly
the one partition that stops (a pod-wide commit rate would never have seen it).

Each scrape becomes one minute of the rule test's timeline: the values and label sets are
the daemon's own, only the clock is compressed.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, ticks, wait_for
from fakeapi_proc import running_fake_api
from k8s_validate import REPO, build_helm, find, render
from kafkahelp import Message, committed_offsets, produce
from prometheus_client.parser import text_string_to_metric_families
from scenario import config_for, topics_for

pytestmark = pytest.mark.kafka

SCRAPES = 30  # one a second, each one minute of rule-test time
TARGET = {"job": "streamstop", "namespace": "streaming", "pod": "streamstop-0"}
Series = dict[str, list[str]]


@pytest.fixture(scope="module")
def promtool() -> Path:
    done = subprocess.run(
        [str(REPO / "scripts" / "promtool.sh")], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    values = {"metrics.prometheusRule.enabled": True, "apiToken.existingSecret": "api"}
    objects = render(build_helm(), set_json=values)
    (rule,) = find(objects, "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def scrape(daemon: Daemon) -> Series:
    """SCRAPES scrapes of every streamstop series, one a second, as promtool input values
    ('_' where a series was absent), with the labels Prometheus would add."""
    series: Series = {}
    for index in ticks(SCRAPES, 1.0):
        _, text = daemon.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(
                    f'{k}="{v}"' for k, v in sorted({**sample.labels, **TARGET}.items())
                )
                values = series.setdefault(f"{sample.name}{{{labels}}}", ["_"] * SCRAPES)
                values[index] = repr(float(sample.value))
    return series


def assert_firing(
    promtool: Path, rules: Path, series: Series, expected: list[dict[str, str]], tmp_path: Path
) -> None:
    """promtool finds exactly `expected` (alert labels) firing at the timeline's end."""
    samples = [
        {
            "labels": "ALERTS{"
            + ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "alertstate": "firing"}.items()))
            + "}",
            "value": 1,
        }
        for labels in expected
    ]
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": name, "values": " ".join(values)} for name, values in series.items()
                ],
                "promql_expr_test": [
                    {
                        "expr": 'ALERTS{alertstate="firing"}',
                        "eval_time": f"{SCRAPES - 1}m",
                        "exp_samples": samples,
                    }
                ],
            }
        ],
    }
    path = tmp_path / f"test-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@contextmanager
def producing(bootstrap: str, topic: str) -> Iterator[None]:
    """Records keep arriving on every partition, a few each half second."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.5):
            produce(bootstrap, topic, [str(uuid.uuid4()) for _ in range(60)])

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def test_no_progress_fires_for_the_one_stuck_partition_and_is_quiet_otherwise(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, promtool: Path, rules_file: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with (
            running_daemon(config, tmp_path / "d.log") as daemon,
            producing(kafka_bootstrap, topics["input"]),
        ):
            daemon.wait_ready()
            wait_for(
                lambda: (
                    len(committed_offsets(kafka_bootstrap, topics["group"], topics["input"])) == 6
                ),
                60,
                "every partition commits",
            )
            healthy = scrape(daemon)
            # One record the API never answers: its partition stops committing, the
            # five others go on.
            stuck = str(uuid.uuid4())
            api.set(missing_uuid=[stuck])
            (at,) = produce(
                kafka_bootstrap, topics["input"], [Message(stuck.encode(), partition=0)]
            )
            wait_for(
                lambda: (
                    committed_offsets(kafka_bootstrap, topics["group"], topics["input"])[0]
                    == at.offset
                ),
                60,
                "partition 0 committed up to the stuck record",
            )
            stalled = scrape(daemon)
    assert_firing(promtool, rules_file, healthy, [], tmp_path)
    no_progress = {
        "alertname": "StreamstopNoProgress",
        "severity": "critical",
        "job": TARGET["job"],
        "namespace": TARGET["namespace"],
        "topic": topics["input"],
        "partition": "0",
    }
    assert_firing(promtool, rules_file, stalled, [no_progress], tmp_path)
