"""What a `streamstop redrive` run reads, and whether it resumes an earlier one.

A redrive is a job: the flags it was run with, its time window resolved once, and for
each output partition the offsets `[start, end)` it reads (`end`: where the partition's
committed results ended when the job began, so a job never reads the results of its own
requests). Its progress is its consumer group's committed offset on each partition, and
the job travels in every commit's metadata, so a rerun learns everything from Kafka.

A rerun with the same flags resumes an unfinished job exactly (same window, same
offsets), and after a finished one reads only the results written since it began (what
failed again, say): the same flags never send the same result twice. Other flags are
refused while a job is unfinished, and start from their window once it is finished.
`--restart` starts from the window whatever was recorded. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamstop.core.results import Status

GROUP_SUFFIX = "-redrive"
_FORMAT = 1  # of the commit metadata


def group_for(group_id: str) -> str:
    """The consumer group holding redrive progress, beside the daemon's `kafka.group_id`."""
    return group_id + GROUP_SUFFIX


@dataclass(frozen=True, slots=True)
class Flags:
    """The selection flags as typed: what makes two runs the same job."""

    statuses: tuple[str, ...]
    since: str | None = None
    until: str | None = None
    partition: int | None = None

    @classmethod
    def of(
        cls,
        statuses: Iterable[Status],
        since: str | None = None,
        until: str | None = None,
        partition: int | None = None,
    ) -> Flags:
        """Flags with the statuses in one order, whatever order they were given in."""
        return cls(tuple(sorted({s.value for s in statuses})), since, until, partition)

    def command(self, options: str = "") -> str:
        """The command line that runs these flags, with `options` (say ` --config x`)."""
        words = ["streamstop", "redrive"]
        for status in self.statuses:
            words += ["--status", status]
        for flag, value in (("--since", self.since), ("--until", self.until)):
            if value is not None:
                words += [flag, value]
        if self.partition is not None:
            words += ["--partition", str(self.partition)]
        return " ".join(words) + options


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one output partition a job reads: `[start, end)`."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Job:
    """One redrive: its number in the group, its flags, its window (epoch ms, None is
    open), when it began (UTC text) and the span of each output partition it reads."""

    number: int
    flags: Flags
    since_ms: int | None
    until_ms: int | None
    began: str
    spans: Mapping[int, Span] = field(default_factory=dict)

    def metadata(self, partition: int) -> str:
        """The commit metadata that records this job on `partition` (well under Kafka's
        4,096 bytes)."""
        span = self.spans[partition]
        return orjson.dumps(
            {
                "redrive": _FORMAT,
                "job": self.number,
                "flags": {
                    "status": list(self.flags.statuses),
                    "since": self.flags.since,
                    "until": self.flags.until,
                    "partition": self.flags.partition,
                },
                "window": [self.since_ms, self.until_ms],
                "began": self.began,
                "span": [span.start, span.end],
            }
        ).decode()

    @property
    def total(self) -> int:
        """Offsets to read over every partition."""
        return sum(span.size for span in self.spans.values())


@dataclass(frozen=True, slots=True)
class Recorded:
    """The latest job of the group, with its committed offset on each of its partitions."""

    job: Job
    committed: Mapping[int, int]

    def position(self, partition: int) -> int:
        """Where `partition` resumes: its committed offset, within its span."""
        span = self.job.spans[partition]
        return min(max(self.committed.get(partition, span.start), span.start), span.end)

    @property
    def scanned(self) -> int:
        return sum(self.position(p) - span.start for p, span in self.job.spans.items())

    @property
    def finished(self) -> bool:
        return all(self.position(p) >= span.end for p, span in self.job.spans.items())


def recorded_job(committed: Mapping[int, tuple[int, str]]) -> Recorded | None:
    """The group's latest job, from the committed (offset, metadata) of each output
    partition; None when no partition records one. Metadata that is not a job (another
    tool's, or damaged) is ignored."""
    jobs: dict[int, list[tuple[int, int, Job]]] = {}
    for partition, (offset, metadata) in committed.items():
        job = _read_job(partition, metadata)
        if job is not None:
            jobs.setdefault(job.number, []).append((partition, offset, job))
    if not jobs:
        return None
    latest = jobs[max(jobs)]
    _, _, first = latest[0]
    spans = {partition: job.spans[partition] for partition, _, job in latest}
    job = Job(first.number, first.flags, first.since_ms, first.until_ms, first.began, spans)
    return Recorded(job, {partition: offset for partition, offset, _ in latest})


def _read_job(partition: int, metadata: str) -> Job | None:
    try:
        data: Any = orjson.loads(metadata)
        if data.get("redrive") != _FORMAT:
            return None
        flags = data["flags"]
        since_ms, until_ms = data["window"]
        start, end = data["span"]
        return Job(
            number=int(data["job"]),
            flags=Flags(
                tuple(str(s) for s in flags["status"]),
                flags["since"],
                flags["until"],
                flags["partition"],
            ),
            since_ms=since_ms,
            until_ms=until_ms,
            began=str(data["began"]),
            spans={partition: Span(int(start), int(end))},
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Fresh:
    """Start a new job with this number; after a finished job with the same flags, read
    only what follows its spans."""

    number: int
    after: Job | None = None

    def start(self, partition: int, window_start: int) -> int:
        """Where the new job starts reading `partition`, given where its window starts."""
        previous = None if self.after is None else self.after.spans.get(partition)
        return window_start if previous is None else max(window_start, previous.end)


@dataclass(frozen=True, slots=True)
class Resume:
    """Continue the recorded job where it stopped."""

    recorded: Recorded


@dataclass(frozen=True, slots=True)
class Conflict:
    """An unfinished job with other flags: finish it, or drop it with `--restart`."""

    recorded: Recorded

    def explain(self, options: str = "") -> str:
        """Why the run is refused, with the command (plus `options`) that finishes the job."""
        job = self.recorded.job
        return (
            f"redrive #{job.number}, begun {job.began}, is unfinished "
            f"({self.recorded.scanned:,} of {job.total:,} results read) and was run as:\n"
            f"  {job.flags.command(options)}\n"
            "Run that command to finish it, or add --restart to drop it and run this one."
        )


Plan = Fresh | Resume | Conflict


def plan(flags: Flags, recorded: Recorded | None, restart: bool) -> Plan:
    """Whether a run with `flags` resumes the recorded job, starts a new one (after it,
    or from its window), or must not run (another unfinished job)."""
    if recorded is None:
        return Fresh(1)
    number = recorded.job.number + 1
    if restart:
        return Fresh(number)
    same = recorded.job.flags == flags
    if not recorded.finished:
        return Resume(recorded) if same else Conflict(recorded)
    return Fresh(number, recorded.job if same else None)
