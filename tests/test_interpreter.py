"""Interpreting answers off the event loop: a huge answer never stalls it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakeapi_proc import running_fake_api
from test_stopclient import UUIDS, post

from streamstop.core.interpret import Kind
from streamstop.fakeapi.rules import code_for
from streamstop.interpreter import WORKER_FAILED_REASON, Interpreter
from streamstop.logs import mask_secrets
from streamstop.stopclient import Response

MIB = 1024 * 1024
EXPECTED = {uuid: code_for(uuid) for uuid in UUIDS}


@pytest.fixture(scope="module")
def huge_answer() -> Iterator[Response]:
    """A 2xx answer of 64 MiB: the requested items after 64 MiB of items nobody asked for
    (inline, its parse held the loop 1.3 s; in a worker thread, 0.6 s, measured)."""
    with running_fake_api("--huge-body-mb", "64") as fake:
        yield asyncio.run(post(fake.url, max_response_bytes=128 * MIB))


@pytest.fixture
def fake_answer() -> Response:
    """A documented answer for UUIDS."""
    items = [{"messageUuid": uuid, "code": code} for uuid, code in EXPECTED.items()]
    return Response(200, {}, orjson.dumps({"errors": True, "items": items}))


@contextlib.asynccontextmanager
async def ticking(gaps: list[float]) -> AsyncIterator[None]:
    """Record the gaps between turns of the event loop while the block runs."""

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()


async def test_a_huge_answer_is_parsed_while_the_loop_keeps_turning(
    huge_answer: Response,
) -> None:
    interpreter = Interpreter(max_retry_after_s=300)
    gaps: list[float] = []
    started = time.perf_counter()
    async with ticking(gaps):
        verdict = await interpreter.interpret(huge_answer, UUIDS, time.time(), mask_secrets)
    elapsed = time.perf_counter() - started
    assert verdict.kind is Kind.ITEMS
    assert verdict.codes == EXPECTED
    # The parse took a while (it is real work) and the loop turned all along: no turn
    # waited more than a fifth of it (inline, one turn waited all of it; in a worker
    # thread, about half). Relative, as a loaded machine slows both.
    assert elapsed > 0.5, elapsed
    assert max(gaps) < elapsed / 5, f"the loop stalled {max(gaps):.2f}s of {elapsed:.2f}s"


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The argument lists of every process the interpreter starts from now on."""
    started: list[tuple[Any, ...]] = []
    spawn = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        started.append(args)
        return await spawn(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return started


async def test_only_answers_over_the_threshold_go_to_a_child_process(
    huge_answer: Response, fake_answer: Response, children: list[tuple[Any, ...]]
) -> None:
    far = {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}
    interpreter = Interpreter(max_retry_after_s=42)
    for answer in (fake_answer, huge_answer):
        verdict = await interpreter.interpret(
            Response(200, far, answer.body), UUIDS, time.time(), mask_secrets
        )
        assert verdict.codes == EXPECTED
        assert verdict.retry_after_s == 42  # the cap applies on both paths
    assert [args[1:] for args in children] == [("-m", "streamstop.interpreter")]


def _interpreter_children() -> list[int]:
    """Pids of this process's children running the answer parser (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if (
                parent == os.getpid()
                and b"streamstop.interpreter" in (entry / "cmdline").read_bytes()
            ):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_a_parser_that_dies_makes_a_retry_and_the_next_answer_a_new_one(
    huge_answer: Response,
) -> None:
    interpreter = Interpreter(max_retry_after_s=300)
    parsing = asyncio.create_task(
        interpreter.interpret(huge_answer, UUIDS, time.time(), mask_secrets)
    )
    deadline = time.monotonic() + 60
    while not (pids := _interpreter_children()):
        assert time.monotonic() < deadline, "no parser process started"
        await asyncio.sleep(0.01)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    verdict = await parsing
    assert (verdict.kind, verdict.reason) == (Kind.RETRY, WORKER_FAILED_REASON)
    again = await interpreter.interpret(huge_answer, UUIDS, time.time(), mask_secrets)
    assert again.codes == EXPECTED


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
async def test_a_cancelled_parse_leaves_no_process_behind(huge_answer: Response) -> None:
    interpreter = Interpreter(max_retry_after_s=300)
    parsing = asyncio.create_task(
        interpreter.interpret(huge_answer, UUIDS, time.time(), mask_secrets)
    )
    deadline = time.monotonic() + 60
    while not _interpreter_children():
        assert time.monotonic() < deadline, "no parser process started"
        await asyncio.sleep(0.01)
    parsing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parsing
    assert _interpreter_children() == []
