"""`streamstop redrive` refusing what it cannot do, before and without a broker: bad
flags and configuration (exit 2), Kafka out of reach (exit 3), each in one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cli_proc import streamstop
from daemon_proc import write_config


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "the following arguments are required: --status"),
        (("--status", "invalid"), "invalid results are not sent again (the input had no usable"),
        (("--status", "stopped"), "stopped results are not sent again (the API stopped"),
        (("--status", "failure"), "unknown status; choose from failed, expired, stop_uncertain"),
        (("--status", "failed", "--since", "2026-01-02T03:00"), "add a time zone"),
        (("--status", "failed", "--until", "last week"), "duration before now (90s, 15m"),
        (("--status", "failed", "--since", "1h", "--until", "2h"), "--since 1h is not before"),
        (("--status", "failed", "--partition", "-1"), "must be 0 or more"),
        (("--status", "failed", "--timeout", "0"), "must be more than 0"),
        (("--status", "failed", "--config", "missing.toml"), "does not exist (named by --config)"),
    ],
)
def test_bad_flags_and_configuration_exit_2_naming_the_problem(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    done = streamstop("redrive", *args, cwd=tmp_path)

    assert done.returncode == 2
    assert says in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_kafka_out_of_reach_is_exit_3_with_what_to_check(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the block ends
    config = write_config(
        tmp_path / "c.toml", {"kafka": {"bootstrap_servers": f"127.0.0.1:{port}"}}
    )

    done = streamstop("redrive", "--status", "failed", "--config", str(config), timeout_s=60)

    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"streamstop redrive: nothing accepts connections at 127.0.0.1:{port} (PLAINTEXT) "
        "(connection refused): check kafka.bootstrap_servers and that the brokers are up"
    ]
