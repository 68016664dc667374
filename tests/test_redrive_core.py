"""`streamstop redrive`'s decisions: what is chosen, what is sent, how a job resumes."""

from __future__ import annotations

import re

import orjson
import pytest
from contract import INPUT_EVENT, INPUT_HEADERS, headers_view, problem
from hypothesis import given
from hypothesis import strategies as st
from redrivehelp import result_value

from streamstop.cli import _build_parser
from streamstop.core.redrive import (
    REDRIVABLE,
    Chosen,
    SeenSources,
    Selection,
    Skipped,
    Source,
    choose,
    parse_moment,
    parse_status,
    request_for,
)
from streamstop.core.redrivejob import (
    Conflict,
    Flags,
    Fresh,
    Job,
    Recorded,
    Resume,
    Span,
    group_for,
    plan,
    recorded_job,
)
from streamstop.core.results import Status

NOW_MS = 1_767_323_045_678  # 2026-01-02T03:04:05.678Z
UUID = "2a28d557-22a1-4be6-8908-1481723043dd"
SOURCE = ("message-cancel-requests", 3, 1207)
FAILED = Selection(frozenset({Status.FAILED}))


# -- flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("90s", NOW_MS - 90_000),
        ("15m", NOW_MS - 900_000),
        ("2h", NOW_MS - 7_200_000),
        ("1d", NOW_MS - 86_400_000),
        ("1h30m", NOW_MS - 5_400_000),
        ("2H", NOW_MS - 7_200_000),
        ("2026-01-02T03:04:05Z", 1_767_323_045_000),
        ("2026-01-02T03:04:05.678Z", NOW_MS),
        ("2026-01-02T04:04:05.678+01:00", NOW_MS),
    ],
)
def test_times_are_iso_with_a_zone_or_durations_before_now(text: str, expected_ms: int) -> None:
    assert parse_moment(text, NOW_MS) == expected_ms


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-01-02T03:00", "add a time zone: 2026-01-02T03:00Z"),
        ("2026-01-02", "add a time zone: 2026-01-02T00:00Z"),
        ("yesterday", "duration before now"),
        ("", "ISO 8601"),
        ("2x", "ISO 8601"),
    ],
)
def test_a_time_that_is_ambiguous_or_unknown_is_refused_with_the_forms(
    text: str, says: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_moment(text, NOW_MS)


@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))
def test_a_duration_is_its_parts_added_up(days: int, hours: int, minutes: int, secs: int) -> None:
    text = f"{days}d{hours}h{minutes}m{secs}s"
    seconds = days * 86_400 + hours * 3_600 + minutes * 60 + secs
    assert parse_moment(text, NOW_MS) == NOW_MS - seconds * 1000


def test_only_statuses_without_a_final_answer_can_be_redriven() -> None:
    assert {parse_status(s.value.upper()) for s in REDRIVABLE} == {
        Status.FAILED,
        Status.EXPIRED,
        Status.STOP_UNCERTAIN,
        Status.UNKNOWN_CODE,
    }
    for final, why in [
        ("stopped", "stopped the message"),
        ("already_sent", "already sent"),
        ("not_found", "no such message"),
        ("invalid", "Re-processing the DLQ"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_status(final)
    with pytest.raises(ValueError, match="unknown status; choose from failed"):
        parse_status("failure")


# -- choosing results -------------------------------------------------------------------


def test_a_window_takes_since_and_leaves_until() -> None:
    window = Selection(frozenset({Status.FAILED}), since_ms=1000, until_ms=2000)
    assert [window.takes(Status.FAILED, t) for t in (999, 1000, 1999, 2000)] == [
        False,
        True,
        True,
        False,
    ]
    assert not window.takes(Status.EXPIRED, 1500)
    assert Selection(frozenset({Status.EXPIRED})).takes(Status.EXPIRED, 0)


def test_a_chosen_result_keeps_its_copied_headers_and_drops_streamstops_own() -> None:
    headers = [
        ("traceparent", b"00-ab-cd-01"),
        ("x-team", b"billing"),
        ("x-empty", None),
        ("streamstop-truncated", b"headers"),
    ]
    value = result_value(Status.FAILED, UUID, SOURCE, "r-1")

    chosen = choose(value, headers, NOW_MS, FAILED)

    assert chosen == Chosen(
        uuid=UUID,
        status=Status.FAILED,
        request_id="r-1",
        source=Source(*SOURCE),
        origin="message-cancel-requests/3/1207",
        headers=(("traceparent", b"00-ab-cd-01"), ("x-team", b"billing"), ("x-empty", None)),
    )


def test_a_result_of_a_redriven_request_names_the_first_record_of_the_chain() -> None:
    value = result_value(Status.FAILED, UUID, ("message-cancel-requests", 0, 99), "r-1")
    first = b"message-cancel-requests/3/1207"

    chosen = choose(value, [("streamstop-redrive-of", first)], NOW_MS, FAILED)
    assert isinstance(chosen, Chosen)
    assert chosen.origin == first.decode()
    assert chosen.source == Source("message-cancel-requests", 0, 99)
    assert chosen.headers == ()
    # A header not in the documented form (an upstream producer set it) is not trusted.
    forged = choose(value, [("streamstop-redrive-of", b"elsewhere")], NOW_MS, FAILED)
    assert isinstance(forged, Chosen)
    assert forged.origin == "message-cancel-requests/0/99"


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"[1, 2]",
        orjson.dumps(
            {**orjson.loads(result_value(Status.FAILED, UUID, SOURCE)), "schemaVersion": 2}
        ),
        orjson.dumps({"schemaVersion": 1, "status": "failed", "messageUuid": UUID}),
        orjson.dumps({**orjson.loads(result_value(Status.FAILED, UUID, SOURCE)), "status": "odd"}),
        orjson.dumps(
            {**orjson.loads(result_value(Status.FAILED, UUID, SOURCE)), "source": {"offset": -1}}
        ),
        orjson.dumps(
            {
                **orjson.loads(result_value(Status.FAILED, UUID, SOURCE)),
                "source": {"topic": "t", "partition": "0", "offset": 1},
            }
        ),
        orjson.dumps({**orjson.loads(result_value(Status.FAILED, UUID, SOURCE)), "messageUuid": 7}),
    ],
)
def test_what_is_not_a_version_1_result_is_skipped_not_misread(value: bytes | None) -> None:
    assert choose(value, [], NOW_MS, FAILED) is Skipped.UNREADABLE


def test_results_of_other_statuses_and_invalid_ones_are_not_chosen() -> None:
    everything = Selection(frozenset(REDRIVABLE))
    for status in (Status.STOPPED, Status.ALREADY_SENT, Status.NOT_FOUND, Status.INVALID):
        value = result_value(status, UUID, SOURCE)
        assert choose(value, [], NOW_MS, everything) is Skipped.NOT_CHOSEN
    late = Selection(frozenset({Status.FAILED}), until_ms=NOW_MS)
    assert choose(result_value(Status.FAILED, UUID, SOURCE), [], NOW_MS, late) is (
        Skipped.NOT_CHOSEN
    )


def test_each_source_record_is_taken_once() -> None:
    seen = SeenSources()
    assert seen.first_time(Source("in", 0, 5))
    assert not seen.first_time(Source("in", 0, 5))
    assert seen.first_time(Source("in", 1, 5))
    assert seen.first_time(Source("other", 0, 5))


# -- the request sent again -------------------------------------------------------------

header_values = st.one_of(st.none(), st.binary(max_size=30))
header_names = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
        lambda name: name != "traceparent"  # the schema wants a string there
    ),
    st.sampled_from(["x-team", "streamstop-truncated", "streamstop-source"]),
)


@given(
    status=st.sampled_from(REDRIVABLE),
    uuid=st.uuids().map(str),
    request_id=st.one_of(st.none(), st.text(max_size=40)),
    headers=st.lists(st.tuples(header_names, header_values), max_size=5),
    source=st.tuples(
        st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True),
        st.integers(0, 1000),
        st.integers(0, 2**40),
    ),
)
def test_every_request_sent_again_is_a_valid_cancel_request(
    status: Status,
    uuid: str,
    request_id: str | None,
    headers: list[tuple[str, bytes | None]],
    source: tuple[str, int, int],
) -> None:
    value = result_value(status, uuid, source, request_id)

    chosen = choose(value, headers, NOW_MS, Selection(frozenset(REDRIVABLE)))
    assert isinstance(chosen, Chosen)
    request = request_for(chosen, 1_048_588)

    assert request.key == uuid.encode()
    document = orjson.loads(request.value)
    assert problem(INPUT_EVENT, document) is None
    assert document == {
        "messageUuid": uuid,
        **({} if request_id is None else {"requestId": request_id}),
    }
    kept = [h for h in headers if not h[0].startswith("streamstop-")]
    assert request.headers == [
        *kept,
        ("streamstop-redrive-of", "/".join(map(str, source)).encode()),
    ]
    assert problem(INPUT_HEADERS, headers_view(request.headers)) is None


def test_a_request_too_large_for_the_input_topic_goes_without_its_copied_headers() -> None:
    big = [("x-blob", b"x" * 5000), ("traceparent", b"00-ab-cd-01")]
    chosen = choose(result_value(Status.FAILED, UUID, SOURCE, "r-1"), big, NOW_MS, FAILED)
    assert isinstance(chosen, Chosen)

    fits = request_for(chosen, 1_048_588)
    cut = request_for(chosen, 1000)

    assert not fits.cut
    assert fits.headers[:2] == big
    assert cut.cut
    assert cut.headers == [("streamstop-redrive-of", b"message-cancel-requests/3/1207")]
    assert cut.value == fits.value


# -- jobs -------------------------------------------------------------------------------

FLAGS = Flags.of([Status.FAILED], "2h")
SPANS = {0: Span(10, 110), 1: Span(0, 50)}


def job(number: int = 3, flags: Flags = FLAGS, spans: dict[int, Span] | None = None) -> Job:
    return Job(number, flags, NOW_MS - 7_200_000, None, "2026-01-02T03:04:05.678Z", spans or SPANS)


def recorded(committed: dict[int, int], number: int = 3, flags: Flags = FLAGS) -> Recorded:
    return Recorded(job(number, flags), committed)


def stored(of: Job, committed: dict[int, int]) -> dict[int, tuple[int, str]]:
    return {p: (committed[p], of.metadata(p)) for p in of.spans}


def test_the_redrive_group_is_named_after_the_daemons() -> None:
    assert group_for("streamstop") == "streamstop-redrive"


def test_flags_are_the_same_whatever_order_the_statuses_came_in() -> None:
    a = Flags.of([Status.FAILED, Status.EXPIRED, Status.FAILED], "2h", None, 3)
    b = Flags.of([Status.EXPIRED, Status.FAILED], "2h", None, 3)
    assert a == b
    assert a.statuses == ("expired", "failed")


@pytest.mark.parametrize(
    "flags",
    [
        Flags.of([Status.FAILED]),
        Flags.of(REDRIVABLE, "2026-01-02T03:00Z", "1h30m", 4),
        Flags.of([Status.UNKNOWN_CODE], until="2026-01-02T03:04:05.678+01:00"),
    ],
)
def test_the_command_printed_for_a_job_runs_that_job(flags: Flags) -> None:
    args = _build_parser().parse_args(flags.command(" --config x.toml").split()[1:])
    again = Flags.of(map(Status, args.status), args.since, args.until, args.partition)
    assert again == flags
    assert args.config == "x.toml"


def test_a_job_travels_in_commit_metadata_and_comes_back_whole() -> None:
    original = job()
    back = recorded_job(stored(original, {0: 60, 1: 50}))

    assert back == Recorded(original, {0: 60, 1: 50})
    assert back.scanned == 50 + 50
    assert not back.finished
    assert back.position(0) == 60


def test_commit_metadata_stays_far_below_kafkas_limit() -> None:
    widest = Flags.of(REDRIVABLE, "2026-01-02T03:04:05.678901+01:00", "9999d99h99m99s", 9999)
    metadata = job(2**31, widest, {9999: Span(2**62, 2**63 - 1)}).metadata(9999)
    assert len(metadata.encode()) < 1024  # offset.metadata.max.bytes defaults to 4096


def test_the_latest_job_wins_and_foreign_metadata_is_ignored() -> None:
    old = job(2, spans={0: Span(0, 5), 1: Span(0, 5), 2: Span(0, 5)})
    new = job(3, spans={0: Span(5, 9)})
    committed = {
        **stored(old, {0: 1, 1: 2, 2: 3}),
        **stored(new, {0: 7}),
        3: (40, "a note from another tool"),
        4: (41, '{"redrive": 1, "job": "x"}'),
    }

    found = recorded_job(committed)

    assert found == Recorded(new, {0: 7})
    assert recorded_job({3: (40, ""), 4: (0, "{}")}) is None


def test_a_position_stays_inside_its_span() -> None:
    assert recorded({0: 3, 1: 99}).position(0) == 10  # below the span: its start
    assert recorded({0: 3, 1: 99}).position(1) == 50  # past it: its end
    assert recorded({}).position(1) == 0  # never committed: its start


def test_plan_resumes_the_same_flags_and_refuses_others_while_unfinished() -> None:
    unfinished = recorded({0: 60, 1: 50})
    other = Flags.of([Status.EXPIRED])

    assert plan(FLAGS, None, restart=False) == Fresh(1)
    assert plan(FLAGS, unfinished, restart=False) == Resume(unfinished)
    assert plan(other, unfinished, restart=False) == Conflict(unfinished)
    assert plan(other, unfinished, restart=True) == Fresh(4)
    assert plan(FLAGS, unfinished, restart=True) == Fresh(4)
    explained = Conflict(unfinished).explain(" --config x.toml")
    assert "redrive #3, begun 2026-01-02T03:04:05.678Z, is unfinished (100 of 150" in explained
    assert "streamstop redrive --status failed --since 2h --config x.toml" in explained
    assert "--restart" in explained


def test_after_a_finished_job_the_same_flags_read_only_what_followed_it() -> None:
    finished = recorded({0: 110, 1: 50})
    assert finished.finished

    same = plan(FLAGS, finished, restart=False)
    other = plan(Flags.of([Status.EXPIRED]), finished, restart=False)

    assert same == Fresh(4, finished.job)
    assert other == Fresh(4)
    assert same.start(0, window_start=0) == 110  # where job 3 ended
    assert same.start(0, window_start=500) == 500  # the window starts later
    assert same.start(7, window_start=3) == 3  # a partition job 3 did not read
    assert other.start(0, window_start=0) == 0
