"""`streamstop topics create|check`: make the topics streamstop needs, or check existing ones.

The rules (what a topic must be) are pure, in `core/topicrules.py`; this module describes
topics through the Kafka admin client and reports. `describe_topics` and `review_topics`
are the async pieces the daemon's own start-up check can reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from streamstop.config import ConfigError, Settings, load
from streamstop.core.topicrules import (
    Finding,
    Role,
    Severity,
    TopicDescription,
    creation_configs,
    has_problems,
    review,
)
from streamstop.exitcodes import EXIT_CONFIG, EXIT_KAFKA, EXIT_OK
from streamstop.kafkaclients import make_admin

# The topic configs the rules read; describe_configs returns their effective values.
_CONFIGS = ("cleanup.policy", "min.insync.replicas", "max.message.bytes")
_POLL_INTERVAL_S = 0.2
DEFAULT_PARTITIONS = 6
DEFAULT_TIMEOUT_S = 30.0
# Replication factor when none is given: 3, or every broker of a smaller cluster.
PREFERRED_REPLICATION_FACTOR = 3


_AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


class KafkaRefused(Exception):
    """Kafka is unreachable or refused a request; the message says what to check."""


class TopicsRefused(Exception):
    """The requested topics cannot be made as asked (bad partitions, factor or configs)."""


@dataclass(frozen=True, slots=True)
class TopicReport:
    """One configured topic: what it is (None: missing) and what is wrong with it."""

    role: Role
    name: str
    described: TopicDescription | None
    findings: list[Finding]
    # Whether `topics create` made it (None for `topics check`).
    created: bool | None = None


def topic_names(settings: Settings) -> dict[Role, str]:
    """The topics the configuration names, by role (the DLQ only when it is on)."""
    kafka = settings.kafka
    names = {Role.INPUT: kafka.input_topic, Role.OUTPUT: kafka.output_topic}
    if kafka.dlq_topic:
        names[Role.DLQ] = kafka.dlq_topic
    return names


async def describe_topics(admin: Any, names: Sequence[str]) -> dict[str, TopicDescription]:
    """Describe the topics among `names` that exist (missing ones are left out).

    Partitions and replication factor come from metadata, `cleanup.policy`,
    `min.insync.replicas` and `max.message.bytes` from describe_configs (effective values:
    topic overrides or the broker's defaults). Never creates a topic: metadata is asked for
    all topics, as a request naming a missing topic lets a broker auto-create it.
    """
    wanted = set(names)
    metadata = await admin.describe_topics()
    found = {t["topic"]: t for t in metadata if t["topic"] in wanted and t["error_code"] == 0}
    if not found:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(_CONFIGS)) for name in found
    ]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                error = for_code(resource["error_code"])
                raise error(f"describe configs of topic {resource['resource_name']!r}")
            configs[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return {name: _description(topic, configs[name]) for name, topic in found.items()}


def _description(metadata: dict[str, Any], configs: dict[str, str]) -> TopicDescription:
    partitions = metadata["partitions"]
    return TopicDescription(
        name=metadata["topic"],
        partitions=len(partitions),
        replication_factor=max((len(p["replicas"]) for p in partitions), default=0),
        cleanup_policy=configs.get("cleanup.policy", "delete"),
        min_insync_replicas=int(configs.get("min.insync.replicas", "1")),
        max_message_bytes=int(configs["max.message.bytes"])
        if "max.message.bytes" in configs
        else None,
    )


async def review_topics(admin: Any, settings: Settings) -> list[TopicReport]:
    """Describe the configured topics and review each against what streamstop needs."""
    names = topic_names(settings)
    described = await describe_topics(admin, list(names.values()))
    hidden = await hidden_topics(admin, [name for name in names.values() if name not in described])
    input_topic = described.get(names[Role.INPUT])
    return [
        TopicReport(
            role,
            name,
            described.get(name),
            review(role, name, described.get(name), input_topic, visible=name not in hidden),
        )
        for role, name in names.items()
    ]


async def hidden_topics(admin: Any, names: Sequence[str]) -> set[str]:
    """Among topics metadata does not list, those Kafka will not say anything about to this
    user (no Describe ACL): they may exist. The others do not exist."""
    if not names:
        return set()
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None}) for name in names
    ]
    return {
        resource["resource_name"]
        for response in await admin.describe_configs(resources)
        for resource in response.to_object()["resources"]
        if resource["error_code"] == TopicAuthorizationFailedError.errno
    }


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """What `topics create` was asked for."""

    partitions: int
    replication_factor: int | None  # None: PREFERRED_REPLICATION_FACTOR or every broker
    extra_configs: dict[str, str]


async def create_topics(admin: Any, settings: Settings, request: CreateRequest) -> set[str]:
    """Create the configured topics that do not exist yet; returns the names created.

    Every new topic gets `cleanup.policy=delete` and `min.insync.replicas` = min(2, RF-1)
    (at least 1), then `request.extra_configs`. Raises TopicsRefused, creating nothing,
    when a planned topic would be unusable (a compacted output or DLQ topic, say).
    """
    names = topic_names(settings)
    rf = request.replication_factor or await _default_replication_factor(admin)
    configs = {**creation_configs(rf), **request.extra_configs}
    refusals = [
        f"{name} ({role.value}) {finding.text}"
        for role, name in names.items()
        for finding in review(role, name, _planned(name, request.partitions, rf, configs))
        if finding.severity is Severity.PROBLEM
    ]
    if refusals:
        raise TopicsRefused("refusing to create the topics:\n  " + "\n  ".join(refusals))
    existing = await describe_topics(admin, list(names.values()))
    missing = [name for name in names.values() if name not in existing]
    if not missing:
        return set()
    new = [NewTopic(name, request.partitions, rf, topic_configs=configs) for name in missing]
    response = await admin.create_topics(new)
    created = {topic for topic, code, _ in response.topic_errors if code == 0}
    # Another client may have made a topic meanwhile: it is checked like any existing one.
    errors = [
        (for_code(code), topic, message)
        for topic, code, message in response.topic_errors
        if code not in (0, TopicAlreadyExistsError.errno)
    ]
    if errors:
        raise _create_error(errors, created, rf)
    await _wait_for_leaders(admin, created)
    return created


def _planned(name: str, partitions: int, rf: int, configs: dict[str, str]) -> TopicDescription:
    try:
        return TopicDescription(
            name=name,
            partitions=partitions,
            replication_factor=rf,
            cleanup_policy=configs["cleanup.policy"],
            min_insync_replicas=int(configs["min.insync.replicas"]),
            max_message_bytes=int(configs["max.message.bytes"])
            if "max.message.bytes" in configs
            else None,
        )
    except ValueError:
        raise TopicsRefused(
            "--topic-config min.insync.replicas and max.message.bytes must be whole numbers"
        ) from None


async def _default_replication_factor(admin: Any) -> int:
    brokers = len((await admin.describe_cluster())["brokers"])
    return max(1, min(PREFERRED_REPLICATION_FACTOR, brokers))


def _create_error(
    errors: list[tuple[type[BrokerResponseError], str, str | None]], created: set[str], rf: int
) -> Exception:
    lines = []
    for error, topic, message in errors:
        line = f"Kafka refused to create topic {topic!r}: {message or error.description}"
        if error is InvalidReplicationFactorError:
            line += f" (replication factor {rf}: choose it with --replication-factor N)"
        lines.append(line)
    if created:
        lines.append(f"created meanwhile: {', '.join(sorted(created))}")
    text = "\n".join(lines)
    if any(error in _AUTHORIZATION_ERRORS for error, _, _ in errors):
        return KafkaRefused(
            f"{text}\nthe user needs the Create operation on the topics or the cluster "
            "(docs/cluster.md, ACLs), or ask the cluster's admins to run this command"
        )
    return TopicsRefused(text)


async def _wait_for_leaders(admin: Any, topics: set[str]) -> None:
    # A topic is usable once every partition has a leader; until then writes fail.
    while topics:
        metadata = await admin.describe_topics()
        ready = {
            t["topic"]
            for t in metadata
            if t["topic"] in topics
            and t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready == topics:
            return
        await asyncio.sleep(_POLL_INTERVAL_S)


def add_arguments(
    parser: argparse.ArgumentParser, epilog: str, formatter: type[argparse.HelpFormatter]
) -> None:
    """Add `create` and `check` under `streamstop topics`."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create the input, output and DLQ topics the config names",
        description="Create the input, output and DLQ topics named by the config "
        "(kafka.input_topic, kafka.output_topic, kafka.dlq_topic when set) if they do "
        "not exist, with cleanup.policy=delete and min.insync.replicas=min(2, RF-1) (at "
        "least 1), then check every one as `topics check` does. Refuses, creating "
        "nothing, a compacted output or DLQ topic.",
        epilog=epilog,
        formatter_class=formatter,
    )
    create.add_argument(
        "--partitions",
        type=_positive,
        default=DEFAULT_PARTITIONS,
        metavar="N",
        help="partitions of each new topic (%(default)s); the input topic's count caps "
        "how many streamstop pods share the work",
    )
    create.add_argument(
        "--replication-factor",
        type=_positive,
        metavar="N",
        help="replicas of each partition (default: 3, or every broker of a smaller cluster)",
    )
    create.add_argument(
        "--topic-config",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="another topic config for the new topics, e.g. retention.ms=604800000 "
        "(repeatable; overrides the two above)",
    )
    check = actions.add_parser(
        "check",
        help="check that the configured topics exist and suit streamstop",
        description="Check the topics the config names against what streamstop needs: "
        "they exist; the output and DLQ topics are not compacted, take a result "
        "(max.message.bytes) and accept writes with acks=all (min.insync.replicas <= "
        "replication factor); and warn about risks (replication factor 1, "
        "min.insync.replicas that stops writes when one broker is down).",
        epilog=epilog,
        formatter_class=formatter,
    )
    for sub in (create, check):
        sub.add_argument("--config", metavar="PATH", help="TOML config file (see below)")
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="SECONDS",
            help="give up on Kafka after this long (%(default)s)",
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("must be KEY=VALUE")
    return key.strip(), value.strip()


def main(args: argparse.Namespace) -> int:
    """Run `topics create` or `topics check`; returns the exit code (see `--help`)."""
    try:
        settings = load(args.config, need_api_token=False).settings
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"streamstop: config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    request = None
    if args.action == "create":
        request = CreateRequest(args.partitions, args.replication_factor, dict(args.topic_config))
    try:
        reports = asyncio.run(_run(settings, request, args.timeout))
    except TopicsRefused as exc:
        print(f"streamstop topics: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KafkaRefused as exc:
        print(f"streamstop topics: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    print(render_reports(reports))
    return EXIT_CONFIG if any(has_problems(report.findings) for report in reports) else EXIT_OK


async def _run(
    settings: Settings, request: CreateRequest | None, timeout_s: float
) -> list[TopicReport]:
    with _kafka_reasons() as reasons:
        admin = make_admin(settings)
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                created = (
                    set() if request is None else await create_topics(admin, settings, request)
                )
                reports = await review_topics(admin, settings)
        except TimeoutError:
            raise KafkaRefused(
                f"Kafka at {settings.kafka.bootstrap_servers} did not answer within "
                f"{timeout_s:g} s: {diagnose_connection(reasons, settings)}"
            ) from None
        except KafkaError as exc:
            raise KafkaRefused(_explain(exc, settings, reasons)) from None
        finally:
            await admin.close()
    if request is None:
        return reports
    return [
        TopicReport(r.role, r.name, r.described, r.findings, r.name in created) for r in reports
    ]


def _explain(exc: KafkaError, settings: Settings, reasons: list[str]) -> str:
    servers = settings.kafka.bootstrap_servers
    if isinstance(exc, _AUTHORIZATION_ERRORS):
        return (
            f"Kafka at {servers} refused: not authorized ({exc}); the user needs Describe and "
            "DescribeConfigs on the topics (docs/cluster.md, ACLs)"
        )
    if isinstance(exc, BrokerResponseError):
        return f"Kafka at {servers} refused the request: {exc}"
    return diagnose_connection(reasons, settings)


def diagnose_connection(reasons: Sequence[str], settings: Settings) -> str:
    """Why the Kafka client could not connect, in plain words, from what aiokafka logged.

    `reasons` are aiokafka's warning and error messages, oldest first. Never names a secret.
    """
    kafka = settings.kafka
    servers, protocol = kafka.bootstrap_servers, kafka.security_protocol
    mechanism, user = kafka.sasl_mechanism or "PLAIN", kafka.sasl_username
    said = "\n".join(reasons)
    tls = protocol in ("SSL", "SASL_SSL")
    if "SaslAuthenticationFailed" in said or "Authentication failed" in said:
        return (
            f"Kafka at {servers} refused the login of user {user!r} ({mechanism}): check "
            "kafka.sasl_username and the password, and that the user exists for "
            f"{mechanism} on this cluster"
        )
    if "UnsupportedSaslMechanism" in said:
        return (
            f"Kafka at {servers} does not offer SASL mechanism {mechanism} on this listener: "
            "set kafka.sasl_mechanism to one it enables (the broker's sasl.enabled.mechanisms)"
        )
    if "IllegalSaslState" in said:
        return (
            f"Kafka at {servers} does not speak SASL on this listener: kafka.security_protocol "
            f"is {protocol}; use the protocol of the listener (PLAINTEXT or SSL, say)"
        )
    unreachable = ("Connect call failed", "Name or service not known", "getaddrinfo")
    if not any(text in said for text in unreachable):
        if tls:
            return (
                f"the TLS connection to Kafka at {servers} failed{_last(reasons)}: check that "
                "the listener uses TLS (else kafka.security_protocol SASL_PLAINTEXT or "
                "PLAINTEXT) and that kafka.ssl_cafile holds the CA that signed its certificate"
            )
        if "closed" in said:
            return (
                f"Kafka at {servers} closed the connection{_last(reasons)}: the listener "
                f"probably expects another kafka.security_protocol than {protocol} (SASL or "
                "TLS)"
            )
    return (
        f"cannot reach Kafka at {servers}{_last(reasons)}: check kafka.bootstrap_servers and "
        "that this host can reach them (DNS, network, firewall)"
    )


def _last(reasons: Sequence[str]) -> str:
    # aiokafka leaves "...: " when the exception had no text (a TLS handshake cut short).
    return f" ({reasons[-1].rstrip(': ')})" if reasons else ""


@contextmanager
def _kafka_reasons() -> Iterator[list[str]]:
    """Collect aiokafka's warnings (the reason a connection failed) instead of printing them."""
    reasons: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reasons.append(record.getMessage())

    logger = logging.getLogger("aiokafka")
    handler = Collect(logging.WARNING)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def render_reports(reports: list[TopicReport]) -> str:
    """The report `topics create|check` prints: each topic, its facts and findings."""
    lines: list[str] = []
    for report in reports:
        state = "unusable" if has_problems(report.findings) else "ok"
        if report.findings and state == "ok":
            state = "ok, with warnings"
        created = "created; " if report.created else ""
        if report.created is False:
            created = "existed, left as it is; "
        lines.append(f"{report.name} ({report.role.value}): {created}{state}")
        if report.described is not None:
            lines.append(f"    {report.described.summary()}")
        lines += [f"    {f.severity.value}: {f.text}" for f in report.findings]
    unusable = sum(has_problems(report.findings) for report in reports)
    if unusable:
        lines.append(f"{unusable} topic(s) unusable as configured: fix the problems above.")
    else:
        inputs = next(r.described for r in reports if r.role is Role.INPUT)
        assert inputs is not None  # a missing input topic is a problem
        lines.append(
            f"streamstop can use these topics; the input topic's {inputs.partitions} "
            f"partitions let up to {inputs.partitions} streamstop instances share the work."
        )
    return "\n".join(lines)
