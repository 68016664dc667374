"""The simulator's HTTP shell in process, where its own work can be made slow."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamstop.fakeapi import server
from streamstop.fakeapi.record import Recorder
from streamstop.fakeapi.responder import Reply, respond
from streamstop.fakeapi.switches import Switches


async def test_latency_counts_from_arrival_so_its_own_work_is_inside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The simulator's own work (here made 0.2 s long) is part of the latency a client sees,
    # not added on top of it: benchmarks measure the client's overhead against it.
    def slow_respond(*args: Any) -> Reply:
        time.sleep(0.2)
        return respond(*args)

    monkeypatch.setattr(server, "respond", slow_respond)
    state = server.FakeState(Switches(latency_ms=400), Recorder())
    async with TestClient(TestServer(server.build_app(state, "/stop"))) as client:
        for _ in range(2):
            started = time.monotonic()
            response = await client.post(
                "/stop",
                json={"uuids": ["00000000-0000-4000-8000-000000000000"]},
                headers={"Authorization": "Basic test-token"},
            )
            elapsed = time.monotonic() - started
            assert response.status == 200
            assert 0.4 <= elapsed < 0.58, elapsed  # added on top: >= 0.6
