"""Topic rules: which topics streamstop can use, decided from a description alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.topicrules import (
    MIN_RECORD_BYTES,
    Role,
    Severity,
    TopicDescription,
    creation_configs,
    has_problems,
    recommended_min_insync,
    review,
)

POLICIES = st.sampled_from(["delete", "compact", "compact,delete", "delete, compact"])


def topic(
    *,
    rf: int = 3,
    min_insync: int = 2,
    policy: str = "delete",
    max_bytes: int | None = 1_048_588,
) -> TopicDescription:
    return TopicDescription("t", 6, rf, policy, min_insync, max_bytes)


def texts(role: Role, described: TopicDescription, severity: Severity) -> list[str]:
    return [f.text for f in review(role, "t", described) if f.severity is severity]


@pytest.mark.parametrize(("rf", "wanted"), [(1, 1), (2, 1), (3, 2), (4, 2), (7, 2)])
def test_min_insync_is_two_with_a_broker_to_spare_else_one(rf: int, wanted: int) -> None:
    assert recommended_min_insync(rf) == wanted
    assert creation_configs(rf) == {"cleanup.policy": "delete", "min.insync.replicas": str(wanted)}


@given(st.integers(1, 20), st.sampled_from(list(Role)))
def test_what_topics_create_makes_has_no_problem(rf: int, role: Role) -> None:
    configs = creation_configs(rf)
    made = topic(
        rf=rf,
        min_insync=int(configs["min.insync.replicas"]),
        policy=configs["cleanup.policy"],
        max_bytes=None,
    )

    assert not has_problems(review(role, "t", made))


@given(
    st.sampled_from([Role.OUTPUT, Role.DLQ]),
    st.integers(1, 5),
    st.integers(1, 6),
    POLICIES,
    st.integers(0, 2_000_000),
)
def test_a_written_topic_is_unusable_exactly_when_kafka_would_refuse_its_records(
    role: Role, rf: int, min_insync: int, policy: str, max_bytes: int
) -> None:
    described = topic(rf=rf, min_insync=min_insync, policy=policy, max_bytes=max_bytes)
    refuses = described.compacted or min_insync > rf or max_bytes < MIN_RECORD_BYTES

    assert has_problems(review(role, "t", described)) == refuses


@given(st.integers(1, 5), st.integers(1, 6), POLICIES, st.integers(0, 2_000_000))
def test_the_input_topic_is_usable_whatever_its_configs(
    rf: int, min_insync: int, policy: str, max_bytes: int
) -> None:
    # streamstop only reads it: writes and sizes are its producers' business.
    described = topic(rf=rf, min_insync=min_insync, policy=policy, max_bytes=max_bytes)

    assert not has_problems(review(Role.INPUT, "t", described))


@pytest.mark.parametrize("role", list(Role))
def test_a_missing_topic_is_a_problem_naming_its_key(role: Role) -> None:
    [finding] = review(role, "orders", None)

    assert finding.severity is Severity.PROBLEM
    assert finding.text.startswith("does not exist")
    assert role.value in finding.text
    assert "streamstop topics create" in finding.text


def test_compacted_output_says_why_and_how_to_fix() -> None:
    [text] = texts(Role.OUTPUT, topic(policy="compact,delete"), Severity.PROBLEM)

    assert "null key" in text
    assert "cleanup.policy=delete" in text


def test_a_compacted_input_topic_is_only_a_warning() -> None:
    [text] = texts(Role.INPUT, topic(policy="compact"), Severity.WARNING)

    assert "cleanup.policy=delete" in text


@pytest.mark.parametrize(
    ("rf", "min_insync", "wanted"),
    [
        (3, 3, "while any one broker is down"),
        (3, 1, "losing that broker"),
        (2, 2, "while any one broker is down"),
    ],
)
def test_min_insync_risks_are_warnings_with_the_value_to_set(
    rf: int, min_insync: int, wanted: str
) -> None:
    [text] = texts(Role.OUTPUT, topic(rf=rf, min_insync=min_insync), Severity.WARNING)

    assert wanted in text
    assert text.endswith(f"set min.insync.replicas={recommended_min_insync(rf)}")


def test_replication_factor_one_is_a_warning_for_every_topic() -> None:
    for role in Role:
        [text] = texts(role, topic(rf=1, min_insync=1), Severity.WARNING)
        assert "replication factor 1" in text


def test_an_output_smaller_than_the_input_warns_about_the_largest_records() -> None:
    larger_input = topic(max_bytes=2_000_000)

    [output] = review(Role.OUTPUT, "t", topic(max_bytes=1_000_000), larger_input)
    [dlq] = review(Role.DLQ, "t", topic(max_bytes=1_000_000), larger_input)

    assert output.severity is dlq.severity is Severity.WARNING
    assert "without their copied input headers" in output.text
    assert "cut to fit" in dlq.text
    assert review(Role.OUTPUT, "t", topic(max_bytes=2_000_000), larger_input) == []


def test_summary_names_every_fact() -> None:
    assert topic(max_bytes=None).summary() == (
        "6 partitions, replication factor 3, min.insync.replicas 2, "
        "cleanup.policy delete, max.message.bytes broker default"
    )


@pytest.mark.parametrize(("role", "needs"), [(Role.INPUT, "Read"), (Role.OUTPUT, "Write")])
def test_a_topic_kafka_will_not_describe_asks_for_acls_not_creation(role: Role, needs: str) -> None:
    [finding] = review(role, "orders", None, visible=False)

    assert finding.severity is Severity.PROBLEM
    assert "not authorized to describe it" in finding.text
    assert f"Describe, DescribeConfigs and {needs}" in finding.text
    assert "topics create" not in finding.text
