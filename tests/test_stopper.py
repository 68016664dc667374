"""The stopper's I/O loop against a fake of its edge (the HTTP client): what it sends,
how long it waits, and what it hands the writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest

from streamstop.config.models import RetrySettings
from streamstop.core.results import Resolution, Status
from streamstop.core.throttle import Throttle
from streamstop.interpreter import Interpreter
from streamstop.metrics import Metrics
from streamstop.stopclient import ApiConfigError, Response
from streamstop.stopper import Stopper

UUIDS = [f"{i:08x}-0000-4000-8000-00000000000{i % 10}" for i in range(6)]


def items(uuids: list[str]) -> Response:
    body = {"errors": False, "items": [{"messageUuid": u, "code": 200} for u in uuids]}
    return Response(200, {}, orjson.dumps(body))


@dataclass
class FakeClient:
    """Answers each request with `answer(uuids, number)` (a Response or an exception)."""

    answer: Callable[[list[str], int], Response | Exception]
    requests: list[list[str]] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, uuids: list[str], request_id: str) -> Response:
        self.requests.append(list(uuids))
        self.started_at.append(time.monotonic())
        self.answered.set()
        answer = self.answer(list(uuids), len(self.requests))
        if isinstance(answer, Exception):
            raise answer
        return answer


def stopper_for(
    client: FakeClient, *, deadline_s: float = 600.0, max_retry_after_s: float = 300.0
) -> Stopper:
    return Stopper(
        client,  # type: ignore[arg-type]
        Interpreter(max_retry_after_s=max_retry_after_s),
        max_in_flight=2,
        max_batch_size=len(UUIDS),
        max_requests_per_second=0,
        policy=RetrySettings(initial_backoff_ms=10, max_backoff_ms=50, deadline_s=deadline_s),
        metrics=Metrics(),
    )


async def resolve(stopper: Stopper, uuids: list[str]) -> dict[str, Resolution]:
    answers: dict[str, Resolution] = {}
    async for found in stopper.start(uuids, "batch-1"):
        assert not answers.keys() & found.keys(), "a uuid answered twice"
        answers.update(found)
    return answers


async def test_missing_items_are_asked_again_and_answers_come_as_they_are_decided() -> None:
    client = FakeClient(lambda uuids, n: items(uuids[::2] if n == 1 else uuids))
    stopper = stopper_for(client)
    chunks = [found async for found in stopper.start(UUIDS, "b")]
    assert [sorted(chunk) for chunk in chunks] == [sorted(UUIDS[::2]), sorted(UUIDS[1::2])]
    assert client.requests[1] == UUIDS[1::2]
    assert {r.attempts for chunk in chunks for r in chunk.values()} == {1, 2}


async def test_a_far_future_retry_after_never_holds_a_uuid_past_its_deadline() -> None:
    date = "Fri, 01 Jan 2100 00:00:00 GMT"
    client = FakeClient(lambda uuids, n: Response(429, {"Retry-After": date}, b""))
    stopper = stopper_for(client, deadline_s=1.0)
    began = time.monotonic()
    answers = await asyncio.wait_for(resolve(stopper, UUIDS), 10)
    assert time.monotonic() - began < 3.0
    assert {a.status for a in answers.values()} == {Status.FAILED}
    assert len(client.requests) == 1  # no request went out during the API's wait


async def test_retry_after_is_capped() -> None:
    answers = iter([Response(429, {"Retry-After": "86400"}, b"")])
    client = FakeClient(lambda uuids, n: next(answers, items(uuids)))
    stopper = stopper_for(client, max_retry_after_s=0.5)
    result = await asyncio.wait_for(resolve(stopper, UUIDS), 10)
    assert {a.status for a in result.values()} == {Status.STOPPED}
    assert 0.5 <= client.started_at[1] - client.started_at[0] < 2.0


async def test_shutdown_ends_a_retry_after_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(lambda uuids, n: Response(503, {"Retry-After": "100"}, b""))
    stopper = stopper_for(client)
    waiting = asyncio.Event()  # set once a request waits for the API's Retry-After
    next_start = Throttle.next_start

    def spied(throttle: Throttle, now: float) -> float:
        start = next_start(throttle, now)
        if start > now + 50:
            waiting.set()
        return start

    monkeypatch.setattr(Throttle, "next_start", spied)
    run = stopper.start(UUIDS, "b")
    resolving = asyncio.create_task(resolve_run(run))
    await asyncio.wait_for(waiting.wait(), 5)
    began = time.monotonic()
    stopper.begin_shutdown()
    assert await asyncio.wait_for(resolving, 5) == {}
    assert time.monotonic() - began < 1.0
    assert run.unresolved() == len(UUIDS)


async def resolve_run(run: object) -> dict[str, Resolution]:
    answers: dict[str, Resolution] = {}
    async for found in run:  # type: ignore[attr-defined]
        answers.update(found)
    return answers


async def test_an_unreadable_token_holds_without_counting_attempts() -> None:
    def answer(uuids: list[str], n: int) -> Response | Exception:
        return ApiConfigError("api.token_file: /x is empty") if n <= 2 else items(uuids)

    client = FakeClient(answer)
    stopper = stopper_for(client)
    seen_holding: list[bool] = []
    run = stopper.start(UUIDS, "b")
    answers: dict[str, Resolution] = {}
    async for found in run:
        seen_holding.append(stopper.holding)
        answers.update(found)
    assert {a.attempts for a in answers.values()} == {1}
    assert not stopper.holding
    assert seen_holding == [False]


async def test_a_401_holds_the_deadline_clock_and_readiness() -> None:
    statuses = iter([401, 401])
    client = FakeClient(
        lambda uuids, n: Response(s, {}, b"") if (s := next(statuses, 0)) else items(uuids)
    )
    stopper = stopper_for(client, deadline_s=0.01)
    holding: list[bool] = []

    async def watch() -> None:
        while True:
            holding.append(stopper.holding)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    answers = await asyncio.wait_for(resolve(stopper, UUIDS), 10)
    watcher.cancel()
    assert any(holding)
    assert {a.status for a in answers.values()} == {Status.STOPPED}  # not failed by the deadline
