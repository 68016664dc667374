"""`streamstop redrive`: its arguments, its report and its exit codes.

The redrive itself (Kafka: the group, the job, reading and publishing) is `redrive.py`;
what is chosen and what is sent is decided in `core/redrive.py` and `core/redrivejob.py`.
Progress goes to stderr (a bar on a terminal, plain lines otherwise), the summary to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from collections import Counter

from streamstop.config import ConfigError, Settings, load
from streamstop.config.models import KafkaSettings
from streamstop.core.redrive import REDRIVABLE, Selection, parse_moment, parse_status
from streamstop.core.redrivejob import GROUP_SUFFIX, Flags
from streamstop.core.results import Status, format_timestamp
from streamstop.exitcodes import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_OK,
)
from streamstop.kafkaclients import aiokafka_quiet
from streamstop.progress import Progress
from streamstop.redrive import (
    SAMPLES,
    Ending,
    Outcome,
    Redrive,
    RedriveBusy,
    RedriveRefused,
    RedriveRequest,
)
from streamstop.topics import KafkaRefused

DEFAULT_TIMEOUT_S = 30.0
PLAIN_EVERY_S = 10.0  # progress lines when stderr is not a terminal
_PROG = "streamstop redrive"

DESCRIPTION = f"""\
Publish again, to the input topic, the cancel requests behind chosen results, while the \
daemons keep running: after an API outage longer than retry.deadline_s, say. It reads the \
output topic read_committed and, for each source record (the input record a result \
answers; once, even when at-least-once left it two results), publishes a request keyed by \
the uuid, value {{"messageUuid", "requestId"}}, with the result's copied headers and \
streamstop-redrive-of: topic/partition/offset of the original input record. Results of \
its own requests are not read (each run reads up to where results ended when it began). \
Progress is saved in consumer group <kafka.group_id>{GROUP_SUFFIX}: stopped with Ctrl-C, \
the same command resumes where it stopped; once finished, the same command reads only the \
results written since. Other flags are refused while a redrive is unfinished (--restart)."""

EXAMPLES = """\
examples:
  streamstop redrive --status failed --since 2h --dry-run     what would be sent
  streamstop redrive --status failed --since 2h               send it
  streamstop redrive --status failed --status expired \\
      --since 2026-01-02T03:00Z --until 2026-01-02T05:00Z      a window, two statuses
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the selection and run options of `streamstop redrive`."""
    parser.add_argument(
        "--status",
        action="append",
        required=True,
        type=_status,
        metavar="STATUS",
        help="results with this status (repeatable): "
        + ", ".join(s.value for s in REDRIVABLE)
        + ". The others are final answers (stopped, already_sent, not_found) or have no "
        "uuid (invalid)",
    )
    parser.add_argument(
        "--since",
        type=_moment,
        metavar="TIME",
        help="results written (Kafka timestamp) at or after TIME: an ISO 8601 time with its "
        "zone (2026-01-02T03:00Z) or a duration before now (90s, 15m, 2h, 1d, 1h30m)",
    )
    parser.add_argument(
        "--until", type=_moment, metavar="TIME", help="results written before TIME (same forms)"
    )
    parser.add_argument(
        "--partition",
        type=_partition,
        metavar="N",
        help="only results on this partition of the output topic",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing and save no progress: print how many would be sent, by status, "
        f"and the first {SAMPLES} uuids",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="drop an unfinished redrive that was run with other flags, and run this one "
        "(without it such a run is refused, naming the unfinished one's command)",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config file (see below)")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up when Kafka does not answer a step for this long (%(default)s)",
    )
    parser.add_argument(
        "--progress-every",
        type=_positive_seconds,
        metavar="SECONDS",
        help="print a plain progress line this often instead of the bar; the default when "
        f"stderr is not a terminal, every {PLAIN_EVERY_S:.0f} s",
    )


def _status(text: str) -> str:
    try:
        return parse_status(text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _moment(text: str) -> str:
    try:
        parse_moment(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _partition(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def main(args: argparse.Namespace) -> int:
    """Run `streamstop redrive`; returns the exit code (see `--help`)."""
    try:
        settings = load(args.config, need_api_token=False).settings
    except ConfigError as exc:
        for problem in exc.problems:
            _error(f"config error: {problem}")
        return EXIT_CONFIG
    now_ms = int(time.time() * 1000)
    since_ms = None if args.since is None else parse_moment(args.since, now_ms)
    until_ms = None if args.until is None else parse_moment(args.until, now_ms)
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        _error(f"--since {args.since} is not before --until {args.until}")
        return EXIT_CONFIG
    statuses = [parse_status(s) for s in args.status]
    request = RedriveRequest(
        flags=Flags.of(statuses, args.since, args.until, args.partition),
        selection=Selection(frozenset(statuses), since_ms, until_ms),
        dry_run=args.dry_run,
        restart=args.restart,
        timeout_s=args.timeout,
        options="" if args.config is None else f" --config {shlex.quote(args.config)}",
    )
    every_s = args.progress_every
    if every_s is None and not sys.stderr.isatty():
        every_s = PLAIN_EVERY_S
    return asyncio.run(_redrive(settings, request, every_s))


async def _redrive(settings: Settings, request: RedriveRequest, every_s: float | None) -> int:
    def progress(total: int) -> Progress:
        return Progress(sys.stderr, total, label=_PROG, unit="results read", every_s=every_s)

    redrive = Redrive(settings, request, progress, _error)
    signals = _Signals(redrive)
    try:
        with aiokafka_quiet():
            outcome = await redrive.run()
    except RedriveRefused as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except RedriveBusy as exc:
        _error(str(exc))
        return EXIT_BUSY
    except KafkaRefused as exc:
        _error(str(exc))
        note = redrive.saved_note()
        if note is not None:
            _error(f"{note}; run the same command again to continue")
        return EXIT_KAFKA
    finally:
        signals.remove()
    print(render(outcome, request, settings.kafka), flush=True)
    return {
        Ending.FINISHED: EXIT_OK,
        Ending.INTERRUPTED: EXIT_INTERRUPTED,
        Ending.SUPERSEDED: EXIT_BUSY,
    }[outcome.ending]


class _Signals:
    """SIGINT (Ctrl-C) and SIGTERM stop the redrive cleanly; a second one exits at once."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, redrive: Redrive) -> None:
        self._redrive = redrive
        self._count = 0
        loop = asyncio.get_running_loop()
        for sig in self._SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self._count += 1
        if self._count > 1:
            _error("second signal: exiting at once; what was committed stays saved")
            os._exit(EXIT_FAILURE)
        _error("stopping: waiting for Kafka to acknowledge what was sent, then saving progress")
        self._redrive.stop()

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._SIGNALS:
            loop.remove_signal_handler(sig)


def _error(line: str) -> None:
    print(f"{_PROG}: {line}", file=sys.stderr, flush=True)


def render(outcome: Outcome, request: RedriveRequest, kafka: KafkaSettings) -> str:
    """The summary printed at the end: what was read, chosen and sent, and what next."""
    job, tally = outcome.job, outcome.tally
    if job is None:
        return f"{_PROG}: interrupted before reading anything; nothing was sent"
    head = {
        Ending.FINISHED: "done",
        Ending.INTERRUPTED: "interrupted",
        Ending.SUPERSEDED: "stopped: another member took over its consumer group (a second "
        "redrive, or this one lost its session)",
    }[outcome.ending]
    if request.dry_run:
        head += " (dry run: nothing sent, no progress saved)"
    command = job.flags.command(request.options)
    chosen = sum(tally.chosen.values())
    lines = [
        f"{_PROG}: {head}",
        f"  redrive #{job.number}{' (resumed)' if outcome.resumed else ''}: {command}",
        f"  results written from {_utc(job.since_ms, 'the oldest')} to "
        f"{_utc(job.until_ms, 'the newest')} on {kafka.output_topic} "
        f"{_partitions(sorted(job.spans))}",
        f"  read {outcome.read:,} of {job.total:,} results in {outcome.elapsed_s:.1f} s"
        + (f"; {tally.unreadable:,} records were not results, skipped" if tally.unreadable else ""),
        f"  chosen {chosen:,}"
        + (f" ({_by_status(tally.chosen)})" if chosen else "")
        + (
            f"; {tally.second_results:,} further results of the same records, skipped"
            if tally.second_results
            else ""
        ),
    ]
    if request.dry_run:
        would = chosen - tally.sent_before
        lines.append(f"  would publish {would:,} to {kafka.input_topic}" + (":" if would else ""))
        lines += [f"    {c.uuid} {c.status}, result of {c.source}" for c in tally.samples]
        if would > len(tally.samples):
            lines.append(f"    ... and {would - len(tally.samples):,} more")
    else:
        published = f"  published {tally.published:,} to {kafka.input_topic}"
        if tally.sent_before:
            published += f", and {tally.sent_before:,} before, by the run this one resumed"
        if tally.cut:
            published += f"; {tally.cut:,} without their copied headers (too large for the topic)"
        lines.append(published)
        if outcome.ending is not Ending.FINISHED:
            lines += [
                f"  progress saved: {outcome.saved:,} of {job.total:,} results read; to go on "
                "where it stopped, run the same command:",
                f"    {command}",
            ]
    return "\n".join(lines)


def _by_status(counts: Counter[Status]) -> str:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{status} {count:,}" for status, count in ordered)


def _utc(ms: int | None, open_end: str) -> str:
    return open_end if ms is None else format_timestamp(ms / 1000)


def _partitions(partitions: list[int]) -> str:
    if len(partitions) == 1:
        return f"partition {partitions[0]}"
    if partitions == list(range(partitions[0], partitions[-1] + 1)):
        return f"partitions {partitions[0]}-{partitions[-1]}"
    return "partitions " + ", ".join(map(str, partitions))
