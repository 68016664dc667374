"""`streamstop topics create|check` against the real broker: what a user setting up sees.

The commands run as processes, configured through the environment as a user would; what
they made is read back with an independent admin client.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cli_proc import streamstop
from kafkahelp import blocking, create_topic, delete_topics, unique_name

from streamstop.config import Settings, load
from streamstop.core.topicrules import TopicDescription
from streamstop.kafkaclients import make_admin
from streamstop.topics import describe_topics, review_topics

Topics = dict[str, str]


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """Fresh input/output/DLQ names, as STREAMSTOP_* variables; whatever exists is deleted."""
    names = {role: unique_name(f"topics-{role}") for role in ("input", "output", "dlq")}
    yield {
        "STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        **{f"STREAMSTOP_KAFKA__{role.upper()}_TOPIC": name for role, name in names.items()},
    }
    existing = set(_describe(kafka_bootstrap, list(names.values())))
    if existing:
        delete_topics(kafka_bootstrap, sorted(existing))


def _topics_cli(env: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    return streamstop("topics", *args, env=env)


def _settings(env: Topics) -> Settings:
    return load(None, env, need_api_token=False).settings


async def _describe_async(bootstrap: str, names: list[str]) -> dict[str, TopicDescription]:
    admin = make_admin(_settings({"STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap}))
    await admin.start()
    try:
        return await describe_topics(admin, names)
    finally:
        await admin.close()


_describe = blocking(_describe_async)


def _name(env: Topics, role: str) -> str:
    return env[f"STREAMSTOP_KAFKA__{role.upper()}_TOPIC"]


def test_create_makes_every_configured_topic_with_safe_configs(
    topics: Topics, kafka_bootstrap: str
) -> None:
    done = _topics_cli(
        topics,
        "create",
        "--partitions",
        "3",
        "--topic-config",
        "retention.ms=3600000",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    names = [_name(topics, role) for role in ("input", "output", "dlq")]
    described = _describe(kafka_bootstrap, names)
    assert set(described) == set(names)
    for topic in described.values():
        assert topic.partitions == 3
        # One broker: the default factor is every broker of a cluster smaller than 3.
        assert topic.replication_factor == 1
        assert topic.cleanup_policy == "delete"
        assert topic.min_insync_replicas == 1
    assert done.stdout.count("created; ok") == 3
    assert "replication factor 1" in done.stdout
    again = _topics_cli(topics, "check")
    assert again.returncode == 0, again.stdout
    assert "created" not in again.stdout


def test_create_leaves_existing_topics_alone_and_reports_them(
    topics: Topics, kafka_bootstrap: str
) -> None:
    create_topic(kafka_bootstrap, _name(topics, "input"), 2)

    done = _topics_cli(topics, "create", "--partitions", "4")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{_name(topics, 'input')} (kafka.input_topic): existed, left as it is" in done.stdout
    described = _describe(kafka_bootstrap, [_name(topics, "input"), _name(topics, "output")])
    assert described[_name(topics, "input")].partitions == 2
    assert described[_name(topics, "output")].partitions == 4


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_create_refuses_a_compacted_output_topic_and_creates_nothing(
    topics: Topics, kafka_bootstrap: str, policy: str
) -> None:
    done = _topics_cli(topics, "create", "--topic-config", f"cleanup.policy={policy}")

    assert done.returncode == 2
    assert "refusing to create" in done.stderr
    assert f"{_name(topics, 'output')} (kafka.output_topic) is compacted" in done.stderr
    assert f"{_name(topics, 'dlq')} (kafka.dlq_topic) is compacted" in done.stderr
    names = [_name(topics, role) for role in ("input", "output", "dlq")]
    assert _describe(kafka_bootstrap, names) == {}


def test_create_with_more_replicas_than_brokers_names_the_option(topics: Topics) -> None:
    done = _topics_cli(topics, "create", "--replication-factor", "3")

    assert done.returncode == 2
    assert "only 1 broker" in done.stderr
    assert "--replication-factor" in done.stderr


def test_check_reports_missing_topics_with_how_to_create_them(topics: Topics) -> None:
    done = _topics_cli(topics, "check")

    assert done.returncode == 2
    for role in ("input", "output", "dlq"):
        assert f"{_name(topics, role)} (kafka.{role}_topic): unusable" in done.stdout
    assert "does not exist" in done.stdout
    assert "streamstop topics create" in done.stdout


@pytest.mark.parametrize(
    ("configs", "wanted"),
    [
        ({"cleanup.policy": "compact"}, "is compacted (cleanup.policy=compact)"),
        ({"max.message.bytes": "512"}, "has max.message.bytes=512: too small"),
        ({"min.insync.replicas": "2"}, "has min.insync.replicas=2 but only 1 replica"),
    ],
    ids=["compacted", "tiny-messages", "min-insync-above-replicas"],
)
def test_check_says_why_an_output_topic_is_unusable(
    topics: Topics, kafka_bootstrap: str, configs: dict[str, str], wanted: str
) -> None:
    create_topic(kafka_bootstrap, _name(topics, "input"), 1)
    create_topic(kafka_bootstrap, _name(topics, "output"), 1, configs)
    create_topic(kafka_bootstrap, _name(topics, "dlq"), 1)

    done = _topics_cli(topics, "check")

    assert done.returncode == 2, done.stdout
    output_lines = _section(done.stdout, _name(topics, "output"))
    assert output_lines[0].endswith("unusable")
    assert any(line.strip().startswith(f"problem: {wanted}") for line in output_lines)
    assert "unusable" not in _section(done.stdout, _name(topics, "input"))[0]


def test_check_compares_effective_size_limits_and_only_warns(
    topics: Topics, kafka_bootstrap: str
) -> None:
    create_topic(kafka_bootstrap, _name(topics, "input"), 1)
    create_topic(kafka_bootstrap, _name(topics, "output"), 1, {"max.message.bytes": "100000"})
    create_topic(kafka_bootstrap, _name(topics, "dlq"), 1)

    done = _topics_cli(topics, "check")

    assert done.returncode == 0, done.stdout
    output_lines = _section(done.stdout, _name(topics, "output"))
    # The input topic has the broker's default, read back as its effective value.
    assert "below the input topic's 1048588" in "\n".join(output_lines)
    assert "max.message.bytes 1048588" in "\n".join(_section(done.stdout, _name(topics, "dlq")))


def _section(report: str, topic: str) -> list[str]:
    """The report's lines about `topic`: its heading and the indented lines below it."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{topic} ("))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    return lines[start:end]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_unreachable_kafka_is_a_clear_message_and_exit_3(topics: Topics) -> None:
    unreachable = f"127.0.0.1:{_free_port()}"
    env = {**topics, "STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS": unreachable}

    for action in ("check", "create"):
        done = _topics_cli(env, action, "--timeout", "20")

        assert done.returncode == 3, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"streamstop topics: nothing accepts connections at {unreachable}")
        assert "kafka.bootstrap_servers" in line
        assert done.stdout == ""


def test_a_configuration_error_is_exit_2_and_needs_no_api_token(topics: Topics) -> None:
    done = _topics_cli({**topics, "STREAMSTOP_KAFKA__BOOTSTRAP_SERVER": "x:1"}, "check")

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "streamstop: config error: kafka.bootstrap_server: unknown key; did you mean "
        "STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS? (from STREAMSTOP_KAFKA__BOOTSTRAP_SERVER)"
    ]


async def test_review_topics_describes_what_the_daemon_needs(
    topics: Topics, kafka_bootstrap: str
) -> None:
    create_topic(kafka_bootstrap, _name(topics, "input"), 2)
    create_topic(
        kafka_bootstrap,
        _name(topics, "output"),
        1,
        {"cleanup.policy": "compact,delete", "max.message.bytes": "200000"},
    )
    settings = _settings(topics)
    admin: Any = make_admin(settings)
    await admin.start()
    try:
        reports = {report.role.value: report for report in await review_topics(admin, settings)}
    finally:
        await admin.close()

    assert reports["kafka.input_topic"].described == TopicDescription(
        name=_name(topics, "input"),
        partitions=2,
        replication_factor=1,
        cleanup_policy="delete",
        min_insync_replicas=1,
        max_message_bytes=1048588,
    )
    output = reports["kafka.output_topic"]
    assert output.described is not None
    assert output.described.compacted
    assert output.described.max_message_bytes == 200_000
    assert [finding.severity.value for finding in output.findings].count("problem") == 1
    assert reports["kafka.dlq_topic"].described is None


# What aiokafka logged, verbatim, against a SASL_PLAINTEXT/SCRAM-SHA-512 broker with each
# mistake (the walkthrough in the first-hour issue); a test broker with SASL belongs to the
# secured-cluster work.
