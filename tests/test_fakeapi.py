"""Contract tests of `streamstop fake-api`, over real HTTP against the real process."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fakeapi_proc import Answer, FakeApi, http, running_fake_api

from streamstop.fakeapi.rules import code_for

DEFAULTS: dict[str, object] = {
    "token": "test-token",
    "latency_ms": 0,
    "latency_jitter_ms": 0,
    "error_rate": 0,
    "throttle_rate": 0,
    "retry_after_s": 1,
    "missing_rate": 0,
    "malformed_rate": 0,
    "reject_uuid": [],
    "missing_uuid": [],
    "reject_all": False,
    "outage": False,
    "uppercase_items": False,
    "status_override": None,
    "seed": 0,
    "retry_after_date": "",
    "malformed_item_rate": 0,
    "huge_body_mb": 0,
    "gzip_answers": False,
    "repeat_stop_code": None,
}
HEX = "0123456789abcdef"


def uuid_ending(digit: str, n: int = 0) -> str:
    """A valid uuid whose last hex digit is `digit`; `n` makes it distinct."""
    return f"{n:08x}-1111-4111-8111-{n:011x}{digit}"


def documented_shape(answer: Answer) -> bool:
    """Whether a body is `{"errors": bool, "items": [{"messageUuid": str, "code": int}]}`."""
    try:
        body = answer.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("errors"), bool)
        and isinstance(body.get("items"), list)
        and all(
            isinstance(item, dict)
            and isinstance(item.get("messageUuid"), str)
            and type(item.get("code")) is int
            for item in body["items"]
        )
    )


@pytest.mark.parametrize(
    "token", [None, "wrong", "test-tokenX", "TEST-TOKEN"], ids=["none", "wrong", "longer", "case"]
)
def test_requests_without_the_right_token_get_401(fake: FakeApi, token: str | None) -> None:
    answer = fake.stop_request([uuid_ending("0")], token=token)
    assert answer.status == 401
    assert "message" in answer.json()


@pytest.mark.parametrize("authorization", ["Bearer test-token", "test-token", "basic test-token"])
def test_authorization_must_be_basic_with_the_token(fake: FakeApi, authorization: str) -> None:
    answer = fake.stop_request(
        [uuid_ending("0")], token=None, headers={"Authorization": authorization}
    )
    assert answer.status == 401


def test_the_right_token_is_answered_200(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0")])
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_gets_415(fake: FakeApi, content_type: str) -> None:
    answer = fake.stop_request([uuid_ending("0")], headers={"Content-Type": content_type})
    assert answer.status == 415


def test_json_with_a_charset_is_accepted(fake: FakeApi) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert fake.stop_request([uuid_ending("0")], headers=headers).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"uuid": ["x"]}',
        b'{"uuids": "x"}',
        b'{"uuids": [1]}',
        b'{"uuids": []}',
    ],
)
def test_bodies_not_of_the_documented_shape_get_400_with_a_message(
    fake: FakeApi, body: bytes
) -> None:
    answer = fake.stop_request(body=body)
    assert answer.status == 400
    assert isinstance(answer.json()["message"], str)


def test_more_than_10000_uuids_get_413_and_10000_are_answered(fake: FakeApi) -> None:
    uuids = [uuid_ending("0", n) for n in range(10_001)]
    assert fake.stop_request(uuids).status == 413
    answer = fake.stop_request(uuids[:10_000])
    assert answer.status == 200
    assert len(answer.json()["items"]) == 10_000


def test_a_body_too_large_to_read_gets_413_json(fake: FakeApi) -> None:
    answer = fake.stop_request(body=json.dumps({"uuids": ["x" * 100] * 100_000}).encode())
    assert answer.status == 413
    assert "message" in answer.json()


def test_code_for_follows_the_last_hex_digit() -> None:
    expected = {**dict.fromkeys("0123456789", 200), "a": 202, "b": 202, "c": 403}
    expected.update({"d": 404, "e": 404, "f": 409})
    for digit, code in expected.items():
        assert code_for(uuid_ending(digit)) == code
        assert code_for(uuid_ending(digit).upper()) == code
    for not_a_uuid in ["", "nope", "{" + uuid_ending("0") + "}", uuid_ending("0").replace("-", "")]:
        assert code_for(not_a_uuid) == 404


def test_each_uuid_is_answered_with_code_for_it(fake: FakeApi) -> None:
    uuids = [uuid_ending(digit, n) for n, digit in enumerate(HEX)]
    uuids += [uuid_ending("a", 99).upper(), "not-a-uuid"]
    answer = fake.stop_request(uuids)
    assert answer.status == 200
    assert documented_shape(answer)
    items = answer.json()["items"]
    assert [item["messageUuid"] for item in items] == uuids
    assert [item["code"] for item in items] == [code_for(uuid) for uuid in uuids]
    assert items[-1]["code"] == 404


@pytest.mark.parametrize(
    ("digits", "errors"),
    [("0123456789ab", False), ("0c", True), ("1d", True), ("ae", True), ("2f", True)],
)
def test_errors_is_true_when_any_code_is_not_200_or_202(
    fake: FakeApi, digits: str, errors: bool
) -> None:
    answer = fake.stop_request([uuid_ending(d, n) for n, d in enumerate(digits)])
    assert answer.json()["errors"] is errors


def test_duplicates_are_answered_once_whatever_their_case(fake: FakeApi) -> None:
    first, other = uuid_ending("a", 1), uuid_ending("0", 2)
    answer = fake.stop_request([first, other, first.upper(), first])
    assert [item["messageUuid"] for item in answer.json()["items"]] == [first, other]


def test_other_paths_are_404_and_other_methods_405(fake: FakeApi) -> None:
    assert http("POST", fake.url + "/extra", b"{}").status == 404
    assert http("GET", fake.url).status == 405
    assert http("PUT", fake.url, b"{}").status == 405


def _all_5xx_html(fake: FakeApi) -> None:
    for n in range(5):
        answer = fake.stop_request([uuid_ending("0", n)])
        assert answer.status in (500, 502, 503)
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.body.startswith(b"<html>")


def _throttled(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0")])
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "3"


def _items_missing(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending(d, n) for n, d in enumerate(HEX)])
    assert answer.status == 200
    assert answer.json()["items"] == []


def _malformed(fake: FakeApi) -> None:
    answers = [fake.stop_request([uuid_ending("0", n), uuid_ending("c", n)]) for n in range(12)]
    assert all(answer.status == 200 for answer in answers)
    assert not any(documented_shape(answer) for answer in answers)
    assert len({answer.body for answer in answers}) >= 3, "malformed bodies should vary"


def _rejects_the_uuid(fake: FakeApi) -> None:
    bad = uuid_ending("0", 7)
    answer = fake.stop_request([uuid_ending("1"), bad.upper()])
    assert answer.status == 400
    assert answer.json() == {"message": f"invalid uuid {bad.upper()}"}
    assert fake.stop_request([uuid_ending("1")]).status == 200


def _rejects_all(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0")])
    assert answer.status == 400
    assert "message" in answer.json()


def _loses_the_uuid(fake: FakeApi) -> None:
    lost, kept = uuid_ending("0", 7), uuid_ending("0", 8)
    for _ in range(3):
        answer = fake.stop_request([lost.upper(), kept])
        assert answer.status == 200
        assert [item["messageUuid"] for item in answer.json()["items"]] == [kept]


def _outage(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0")])
    assert answer.status == 503
    assert answer.body.startswith(b"<html>")


def _uppercase(fake: FakeApi) -> None:
    uuids = [uuid_ending("a", 1), uuid_ending("c", 2)]
    items = fake.stop_request(uuids).json()["items"]
    assert [item["messageUuid"] for item in items] == [uuid.upper() for uuid in uuids]
    assert [item["code"] for item in items] == [202, 403]


def _overridden(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0")])
    assert answer.status == 302
    assert "message" in answer.json()


def _slow(fake: FakeApi) -> None:
    started = time.monotonic()
    assert fake.stop_request([uuid_ending("0")]).status == 200
    assert time.monotonic() - started >= 0.3


def _jittered(fake: FakeApi) -> None:
    durations = []
    for _ in range(5):
        started = time.monotonic()
        fake.stop_request([uuid_ending("0")])
        durations.append(time.monotonic() - started)
    assert all(0 <= d < 1.0 for d in durations)
    # Seeded: the draws are fixed, far apart enough to see through the noise.
    assert max(durations) - min(durations) >= 0.03


def _malformed_items(fake: FakeApi) -> None:
    uuids = [uuid_ending(digit, n) for n, digit in enumerate("0123456789")]
    body = fake.stop_request(uuids).json()
    assert isinstance(body["errors"], bool)
    items = body["items"]
    assert len(items) == len(uuids)
    assert all(item["messageUuid"] is None or isinstance(item["code"], str) for item in items)
    assert any(item["messageUuid"] is None for item in items)
    assert any(isinstance(item["code"], str) for item in items)


def _padded(fake: FakeApi) -> None:
    uuids = [uuid_ending("0", 1), uuid_ending("c", 2)]
    answer = fake.stop_request(uuids)
    assert 2 * 1024 * 1024 < len(answer.body) < 3 * 1024 * 1024
    items = answer.json()["items"]
    answered = [item for item in items if item["messageUuid"] in uuids]
    assert answered == [{"messageUuid": u, "code": code_for(u)} for u in uuids]
    assert len(items) > 30_000  # the rest is for a uuid nobody asked for


def _gzip_bomb(fake: FakeApi) -> None:
    uuids = [uuid_ending("a", 1)]
    answer = fake.stop_request(uuids)  # urllib does not decompress
    assert answer.status == 200
    assert answer.headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(answer.body)  # also checks the CRC and length
    assert len(plain) > 64 * 1024 * 1024
    assert len(answer.body) < len(plain) / 200
    assert plain.endswith(b'{"messageUuid":"%s","code":202}]}' % uuids[0].encode())


def _far_future_retry_after(fake: FakeApi) -> None:
    answer = fake.stop_request([uuid_ending("0", 5)])
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "Fri, 01 Jan 2100 00:00:00 GMT"


def _forgets_stopped(fake: FakeApi) -> None:
    stopped, uncertain, sent = uuid_ending("0", 11), uuid_ending("a", 12), uuid_ending("c", 13)
    first = fake.stop_request([stopped, uncertain, sent]).json()["items"]
    assert [item["code"] for item in first] == [200, 202, 403]
    again = fake.stop_request([sent, uncertain.upper(), stopped]).json()["items"]
    assert [item["code"] for item in again] == [403, 404, 404]


FAULTS: dict[str, tuple[dict[str, object], Callable[[FakeApi], None]]] = {
    "error_rate": ({"error_rate": 1.0}, _all_5xx_html),
    "throttle_rate": ({"throttle_rate": 1.0, "retry_after_s": 3}, _throttled),
    "missing_rate": ({"missing_rate": 1.0}, _items_missing),
    "malformed_rate": ({"malformed_rate": 1.0}, _malformed),
    "reject_uuid": ({"reject_uuid": [uuid_ending("0", 7)]}, _rejects_the_uuid),
    "missing_uuid": ({"missing_uuid": [uuid_ending("0", 7)]}, _loses_the_uuid),
    "reject_all": ({"reject_all": True}, _rejects_all),
    "outage": ({"outage": True}, _outage),
    "uppercase_items": ({"uppercase_items": True}, _uppercase),
    "status_override": ({"status_override": 302}, _overridden),
    "latency_ms": ({"latency_ms": 300}, _slow),
    "latency_jitter_ms": ({"latency_jitter_ms": 200}, _jittered),
    "malformed_item_rate": ({"malformed_item_rate": 1.0}, _malformed_items),
    "huge_body_mb": ({"huge_body_mb": 2}, _padded),
    "gzip_answers": ({"gzip_answers": True, "huge_body_mb": 64}, _gzip_bomb),
    "retry_after_date": (
        {"throttle_rate": 1.0, "retry_after_date": "Fri, 01 Jan 2100 00:00:00 GMT"},
        _far_future_retry_after,
    ),
    "repeat_stop_code": ({"repeat_stop_code": 404}, _forgets_stopped),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_switch_takes_effect_at_runtime(fake: FakeApi, name: str) -> None:
    switches, check = FAULTS[name]
    assert fake.stop_request([uuid_ending("0")]).status == 200
    config = fake.set(**switches)
    assert {key: config[key] for key in switches} == switches
    check(fake)
    fake.set(**DEFAULTS)
    assert fake.stop_request([uuid_ending("1")]).status == 200


def test_a_uuid_stopped_before_gets_the_same_code_again_by_default(fake: FakeApi) -> None:
    uuids = [uuid_ending(digit, n) for n, digit in enumerate("0abcd")]
    first = fake.stop_request(uuids).json()["items"]
    again = fake.stop_request([uuid.upper() for uuid in uuids]).json()["items"]
    assert [item["code"] for item in again] == [item["code"] for item in first]
    assert fake.stats()["stopped_uuids"] == 3  # 200, 202 and 202


def test_stats_give_the_most_requests_started_within_one_second(fake: FakeApi) -> None:
    started = time.monotonic()
    for n in range(6):
        fake.stop_request([uuid_ending("0", n)])
    burst_s = time.monotonic() - started
    # Past the burst's second, two more cannot raise the maximum.
    deadline = time.monotonic() + 1.1
    while time.monotonic() < deadline:
        time.sleep(deadline - time.monotonic())
    for n in range(2):
        fake.stop_request([uuid_ending("1", n)])
    busiest = fake.stats()["max_requests_in_1s"]
    if burst_s < 1.0:
        assert busiest == 6
    else:  # a machine too loaded to send 6 requests in a second
        assert 2 <= busiest <= 6
    fake.reset()
    assert fake.stats()["max_requests_in_1s"] == 0


@pytest.mark.parametrize("status", [401, 404, 500])
def test_status_override_answers_that_status(fake: FakeApi, status: int) -> None:
    fake.set(status_override=status)
    assert fake.stop_request([uuid_ending("0")]).status == status


def test_a_new_token_replaces_the_old_one_and_is_never_shown(fake: FakeApi) -> None:
    config = fake.set(token="rotated-secret")
    assert "rotated-secret" not in json.dumps(config)
    assert "rotated-secret" not in json.dumps(fake.config())
    assert fake.stop_request([uuid_ending("0")]).status == 401
    assert fake.stop_request([uuid_ending("0")], token="rotated-secret").status == 200


@pytest.mark.parametrize(
    ("change", "named"),
    [({"no_such_switch": 1}, "no_such_switch"), ({"error_rate": 2}, "error_rate")],
)
def test_a_bad_config_change_is_refused_and_changes_nothing(
    fake: FakeApi, change: dict[str, object], named: str
) -> None:
    answer = http("POST", f"{fake.admin}/config", json.dumps({"outage": True, **change}).encode())
    assert answer.status == 400
    assert named in answer.json()["message"]
    assert fake.config()["outage"] is False


def test_a_seed_replays_the_same_faults(fake: FakeApi) -> None:
    def statuses() -> list[int]:
        return [fake.stop_request([uuid_ending("0", n)]).status for n in range(30)]

    fake.set(error_rate=0.3, throttle_rate=0.3, seed=7)
    first = statuses()
    fake.set(seed=7)
    assert statuses() == first
    assert {200, 429} <= set(first)
    assert set(first) & {500, 502, 503}


def test_received_lists_every_stop_request_even_rejected_ones(fake: FakeApi) -> None:
    before = time.time()
    good = [uuid_ending("0", 1), uuid_ending("c", 2), uuid_ending("0", 1).upper()]
    fake.stop_request(good, headers={"X-Request-Id": "batch-1"})
    fake.stop_request([uuid_ending("1")], token="wrong")
    fake.stop_request(body=b"not json", headers={"X-Request-Id": "batch-3"})

    received = fake.received()
    assert [(r["requestId"], r["uuids"], r["status"]) for r in received] == [
        ("batch-1", good, 200),
        (None, [uuid_ending("1")], 401),
        ("batch-3", [], 400),
    ]
    assert all(before - 1 <= r["at"] <= time.time() + 1 for r in received)
    assert http("GET", f"{fake.admin}/received").json()["uuids_total"] == 4
    stats = fake.stats()
    assert 1 <= stats.pop("max_requests_in_1s") <= 3  # the busiest second: see its own test
    assert stats == {
        "requests": 3,
        "by_status": {"200": 1, "400": 1, "401": 1},
        "uuids_total": 4,
        "stopped_uuids": 1,
    }

    fake.reset()
    assert fake.received() == []
    assert fake.stats()["uuids_total"] == fake.stats()["stopped_uuids"] == 0


def test_cli_flags_set_the_switches_and_the_record_file_survives(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    rejected = [uuid_ending("0", 1), uuid_ending("0", 2)]
    args = ["--token", "cli-secret-token", "--path", "/stop", "--record-file", str(record)]
    args += ["--outage", "--error-rate", "0.25", "--latency-ms", "5", "--seed", "3"]
    args += [arg for uuid in rejected for arg in ("--reject-uuid", uuid)]
    with running_fake_api(*args) as fake:
        assert fake.url.endswith("/stop")
        config = fake.config()
        expected = {"outage": True, "error_rate": 0.25, "latency_ms": 5, "seed": 3}
        assert {key: config[key] for key in expected} == expected
        assert config["reject_uuid"] == rejected
        assert fake.stop_request([uuid_ending("0")], token="cli-secret-token").status == 503

        fake.set(outage=False, error_rate=0)
        answer = fake.stop_request(
            [uuid_ending("c")], token="cli-secret-token", headers={"X-Request-Id": "b-2"}
        )
        assert answer.status == 200
        assert fake.stop_request([rejected[1]], token="cli-secret-token").status == 400
        assert fake.terminate() == 0
        output = fake.output.read_text()

    assert "cli-secret-token" not in output
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(line["requestId"], line["uuids"], line["status"]) for line in lines] == [
        (None, [uuid_ending("0")], 503),
        ("b-2", [uuid_ending("c")], 200),
        (None, [rejected[1]], 400),
    ]


def test_sigterm_exits_0_after_printing_one_listening_line() -> None:
    with running_fake_api() as fake:
        assert fake.stop_request([uuid_ending("0")]).status == 200
        assert fake.terminate() == 0
        lines = fake.output.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "event": "fake_api_listening",
        "url": fake.url,
        "admin": fake.admin,
    }


def test_help_lists_every_switch_and_the_tls_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamstop", "fake-api", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    flags = ["--" + name.replace("_", "-") for name in DEFAULTS]
    flags += ["--tls-certfile", "--tls-keyfile", "--tls-client-cafile"]
    assert [flag for flag in flags if flag not in done.stdout] == []


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (["--error-rate", "2"], "error_rate"),
        (["--status-override", "abc"], "status_override"),
        (["--retry-after-date", "tomorrow"], "retry_after_date"),
        (["--huge-body-mb", "-1"], "huge_body_mb"),
        (["--tls-certfile", "/nonexistent/cert.pem"], "--tls-certfile"),
        (["--tls-keyfile", "/nonexistent/key.pem"], "--tls-certfile"),
    ],
)
def test_a_bad_flag_value_exits_2_with_one_line_naming_it(flag: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamstop", "fake-api", "--port", "0", *flag],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert named in done.stderr


def test_a_taken_port_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "streamstop", "fake-api", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert "address already in use" in done.stderr


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_answering_10000_uuid_requests_is_cheap() -> None:
    uuids = [uuid_ending(HEX[n % 16], n) for n in range(10_000)]
    body = json.dumps({"uuids": uuids}).encode()
    with running_fake_api() as fake:
        fake.stop_request(body=body)  # warm-up
        cpu_before, started = _cpu_seconds(fake.proc.pid), time.monotonic()
        requests = 30
        for _ in range(requests):
            assert fake.stop_request(body=body).status == 200
        cpu = _cpu_seconds(fake.proc.pid) - cpu_before
        wall = time.monotonic() - started
    per_cpu_second = requests * len(uuids) / max(cpu, 0.01)
    print(f"\nfake-api: {per_cpu_second:,.0f} uuids per CPU second, wall {wall:.2f}s")
    assert per_cpu_second > 200_000
