"""`streamstop topics create|check`: make the topics streamstop needs, or check existing ones.

The Kafka side (describe, review, create) is `topics.py`, the rules `core/topicrules.py`;
this module is the command: its arguments, its report and its exit codes.

Never: create a topic that would be unusable (a compacted output topic), or one that exists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import KafkaError

from streamstop.config import ConfigError, Settings, load
from streamstop.core.topicrules import Role, has_problems
from streamstop.exitcodes import EXIT_CONFIG, EXIT_KAFKA, EXIT_OK
from streamstop.kafkaclients import explain_failure, make_admin
from streamstop.topics import (
    CreateRequest,
    KafkaRefused,
    TopicReport,
    TopicsRefused,
    create_topics,
    review_topics,
)

DEFAULT_PARTITIONS = 6
DEFAULT_TIMEOUT_S = 30.0


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
    with _aiokafka_quiet():
        admin = make_admin(settings)
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                created = (
                    set() if request is None else await create_topics(admin, settings, request)
                )
                reports = await review_topics(admin, settings)
        except (KafkaError, TimeoutError) as exc:
            # The same one line the daemon logs when Kafka holds it.
            raise KafkaRefused(await explain_failure(exc, settings, timeout_s)) from None
        finally:
            await admin.close()
    if request is None:
        return reports
    return [
        TopicReport(r.role, r.name, r.described, r.findings, r.name in created) for r in reports
    ]


@contextmanager
def _aiokafka_quiet() -> Iterator[None]:
    """aiokafka's own lines stay off the command's output: its one line says why."""
    logger = logging.getLogger("aiokafka")
    saved = logger.propagate, logger.level
    logger.propagate, logger.level = False, logging.CRITICAL
    try:
        yield
    finally:
        logger.propagate, logger.level = saved


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
