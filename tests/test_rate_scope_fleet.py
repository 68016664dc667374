"""Three daemons in one group share `api.max_requests_per_second` (`api.rate_scope =
"group"`), through start-up (members joining one after another) and a rebalance in the
middle, as the stop API sees it; with `rate_scope = "pod"` the same fleet sends about three
times as much, which shows the measurement can tell the two apart."""

from __future__ import annotations

import contextlib
import functools
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, sampled, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import Message, lag, produce
from scenario import config_for, topics_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LIMIT = 20  # requests per second, for the whole group
MEMBERS = 3
PARTITIONS = 6
BATCH = 5  # uuids per request: the backlog offers far more requests than the limit
# Each member's requests sit on its own grid (1/its rate apart): a 1-second window can
# catch one request more than the member's exact share (tests/test_rate_scope.py proves at
# most budget + members - 1 when the shares are steady), and arrival jitter on this loaded
# box can move one more in. So: one request per member over the limit.
TOLERANCE = MEMBERS
STEADY_S = 8.0


def last_assignment(daemon: Daemon) -> list[str] | None:
    found = daemon.events("partitions_assigned")
    return found[-1]["partitions"] if found else None


def settled(daemons: list[Daemon], sizes: list[int]) -> bool:
    """Every live daemon's latest assignment is one generation's: sizes as given."""
    latest = [last_assignment(daemon) for daemon in daemons]
    if any(parts is None for parts in latest):
        return False
    return sorted(len(parts or []) for parts in latest) == sorted(sizes)


def run_fleet(
    tmp_path: Path, bootstrap: str, make_topic: Any, scope: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Daemon]]:
    """Start three daemons one after another on a large backlog, restart the third in the
    middle, and return the simulator's stats and requests (and the daemons, stopped)."""
    topics = topics_for(make_topic, dlq=False)
    backlog = 20_000  # ~100 s of work at the limit, ~35 s at three times it
    produce(
        bootstrap, topics["input"], [Message(str(uuid.uuid4()).encode()) for _ in range(backlog)]
    )
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "20") as api:
        config = config_for(
            tmp_path,
            bootstrap,
            topics,
            api.url,
            api__max_requests_per_second=LIMIT,
            api__rate_scope=scope,
            batch__max_size=BATCH,
            batch__max_wait_ms=50,
            # Small, so that a revoked member's drain (at its old share) is short.
            batch__max_pending=50,
            lifecycle__revoke_timeout_s=5,
        )
        started: list[Daemon] = []
        with contextlib.ExitStack() as stack:

            def start(name: str) -> Daemon:
                daemon = stack.enter_context(running_daemon(config, tmp_path / f"{name}.log"))
                started.append(daemon)
                return daemon

            live: list[Daemon] = []
            for index in range(MEMBERS):  # members join one after another
                live.append(start(f"member{index}"))
                sizes = [PARTITIONS // len(live)] * len(live)
                wait_for(functools.partial(settled, live, sizes), 90, f"{len(live)} assigned")
            for _ in sampled(STEADY_S, 1.0):
                pass
            leaving = live.pop()
            leaving.signal(signal.SIGTERM)
            assert leaving.wait_exit(40) == 0
            wait_for(lambda: settled(live, [3, 3]), 90, "two members share the partitions")
            live.append(start("member2-again"))
            wait_for(lambda: settled(live, [2, 2, 2]), 90, "three members again")
            for _ in sampled(STEADY_S, 1.0):
                pass
            stats, requests = api.stats(), api.received()
        assert lag(bootstrap, topics["group"], topics["input"]) > 0, "work all along"
    return stats, requests, started


def average_rate(requests: list[dict[str, Any]]) -> float:
    """Requests per second from the first request to the last (there was work all along)."""
    times = [float(request["at"]) for request in requests]
    return (len(times) - 1) / (max(times) - min(times))


def test_the_group_shares_one_rate_budget_through_joins_and_a_rebalance(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    stats, requests, daemons = run_fleet(tmp_path, kafka_bootstrap, make_topic, "group")
    busiest, average = stats["max_requests_in_1s"], average_rate(requests)
    print(f"group scope: busiest second {busiest} requests, average {average:.1f}/s")
    assert busiest <= LIMIT + TOLERANCE
    assert average >= 0.8 * LIMIT
    # The first member took the share of each generation: alone, one of two, one of
    # three, one of two while the third restarted, one of three again.
    shares = [line["requests_per_second"] for line in daemons[0].events("api_rate_share")]
    assert shares == pytest.approx([20.0, 10.0, 20 / 3, 10.0, 20 / 3], abs=0.01)


def test_with_pod_scope_the_same_fleet_sends_about_three_times_the_limit(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    stats, requests, daemons = run_fleet(tmp_path, kafka_bootstrap, make_topic, "pod")
    busiest, average = stats["max_requests_in_1s"], average_rate(requests)
    print(f"pod scope: busiest second {busiest} requests, average {average:.1f}/s")
    assert busiest >= 2.5 * LIMIT
    assert not daemons[0].events("api_rate_share")
