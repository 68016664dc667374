"""The progress `streamstop redrive` shows: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

import pytest

from streamstop.progress import Progress


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(every_s: float = 10.0) -> tuple[Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(
        stream, 10_000, label="redrive", unit="results read", every_s=every_s, clock=clock
    )
    return progress, stream, clock


def test_a_plain_line_says_how_far_how_fast_and_how_long_to_go() -> None:
    progress, _, clock = plain()
    clock.now += 2.0

    line = progress.line(4_000, [("chosen", 1_200), ("published", 1_100)], clock.now)

    assert line == (
        "redrive: 4,000 of 10,000 results read (40%), 1,200 chosen, 1,100 published, "
        "2,000/s, ETA 0:03"
    )


def test_plain_lines_come_every_interval_and_never_twice_the_same() -> None:
    progress, stream, clock = plain(every_s=10.0)

    progress.show(0, [("chosen", 0)])  # the first one at once
    clock.now += 5
    progress.show(100, [("chosen", 1)])  # too soon
    clock.now += 5
    progress.show(200, [("chosen", 2)])
    progress.show(200, [("chosen", 2)], now=True)  # forced, but nothing changed
    progress.show(300, [("chosen", 3)], now=True)

    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "redrive: 0 of 10",
        "redrive: 200 of 10",
        "redrive: 300 of 10",
    ]
    assert "\r" not in stream.getvalue()
    assert "\x1b" not in stream.getvalue()


@pytest.mark.parametrize("width", [40, 79, 120])
def test_the_bar_fits_the_terminal_and_is_redrawn_in_place(width: int) -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, 10_000, label="redrive", unit="read", every_s=None, clock=clock)
    clock.now += 1.0

    bar = progress.bar(2_500, [("chosen", 700), ("published", 650)], clock.now, width)

    assert len(bar) <= width
    assert bar.startswith(" 25% |")
    if width >= 79:
        assert bar.endswith("2,500/10,000  ETA 0:03  2,500/s  700 chosen  650 published")
        cells = bar.split("|")[1]
        assert cells.count("#") == round(len(cells) / 4)


def test_the_bar_is_cleared_when_done() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(stream, 10, label="redrive", unit="read", every_s=None, clock=clock)

    progress.show(5, [])
    progress.close()

    assert stream.getvalue().startswith("\r 50% |")
    assert stream.getvalue().endswith("\r\x1b[K")


def test_an_empty_job_is_done_and_an_unknown_pace_has_no_eta() -> None:
    progress, _, clock = plain()
    empty = Progress(io.StringIO(), 0, label="r", unit="read", every_s=1.0, clock=clock)

    assert empty.line(0, [], clock.now) == "r: 0 of 0 read (100%), 0/s, ETA --:--"
    clock.now += 3_600 * 2
    assert progress.line(1, [], clock.now).endswith("ETA 19998:00:00")


def test_on_a_narrow_terminal_the_rate_goes_before_the_counters() -> None:
    clock = Clock()
    progress = Progress(
        io.StringIO(), 1_000_000, label="redrive", unit="read", every_s=None, clock=clock
    )
    clock.now += 10.0
    counters = [("chosen", 250_000), ("published", 250_000)]

    wide = progress.bar(500_000, counters, clock.now, 119)
    narrow = progress.bar(500_000, counters, clock.now, 85)

    assert "50,000/s" in wide
    assert "50,000/s" not in narrow
    assert narrow.endswith("500,000/1,000,000  ETA 0:10  250,000 chosen  250,000 published")
    assert len(narrow) <= 85
