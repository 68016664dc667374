"""The command line as a first user meets it: help that teaches, and check-config's output.

Every command's `--help` must carry what a user needs without the docs: where the config
is looked up, the environment form, the exit codes and where the docs are. `check-config`
keeps stdout pure JSON; `run` reports configuration errors as JSON log lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_proc import streamstop

REPO = Path(__file__).resolve().parent.parent
TOKEN = "cli-T0ken-DISTINCTIVE"


@pytest.mark.parametrize(
    ("command", "exit_codes"),
    [
        (("run",), (0, 1, 2)),
        (("check-config",), (0, 2)),
        (("topics",), (0, 2, 3)),
        (("topics", "create"), (0, 2, 3)),
        (("topics", "check"), (0, 2, 3)),
        (("redrive",), (0, 1, 2, 3, 4, 130)),
    ],
    ids=["run", "check-config", "topics", "topics-create", "topics-check", "redrive"],
)
def test_help_teaches_lookup_environment_exit_codes_and_docs(
    tmp_path: Path, command: tuple[str, ...], exit_codes: tuple[int, ...]
) -> None:
    done = streamstop(*command, "--help", cwd=tmp_path)

    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    lookup = ["--config PATH", "$STREAMSTOP_CONFIG", "./config/streamstop.toml", "defaults"]
    positions = [text.index(step, text.index("configuration:")) for step in lookup]
    assert positions == sorted(positions), "lookup order as the loader applies it"
    assert "STREAMSTOP_<SECTION>__<KEY>" in text
    assert "STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS=" in text
    codes = done.stdout.split("exit codes:")[1].split("\n\n")[0]
    assert [int(line.split()[0]) for line in codes.strip().splitlines()] == list(exit_codes)
    for page in ("docs/configuration.md", "docs/cluster.md"):
        assert page in text
        assert (REPO / page).is_file(), f"--help points to {page}, which must exist"


def test_fake_api_help_has_exit_codes_and_docs(tmp_path: Path) -> None:
    done = streamstop("fake-api", "--help", cwd=tmp_path)

    assert "exit codes:" in done.stdout
    assert "docs/cluster.md" in done.stdout


def test_check_config_names_the_file_and_keeps_stdout_json(tmp_path: Path) -> None:
    config = tmp_path / "config" / "streamstop.toml"
    config.parent.mkdir()
    config.write_text('[kafka]\ngroup_id = "from-file"\n')
    env = {"STREAMSTOP_API__TOKEN": TOKEN, "STREAMSTOP_KAFKA_GROUP_ID": "typo"}

    done = streamstop("check-config", "--show-origin", cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kafka"]["group_id"] == "from-file"
    stderr = done.stderr.splitlines()
    assert stderr[0] == "streamstop: config file: config/streamstop.toml"
    assert stderr[1].startswith("streamstop: note: STREAMSTOP_KAFKA_GROUP_ID is ignored")
    origins = {line.split(" = ")[0]: line for line in stderr[2:]}
    assert origins["kafka.group_id"].endswith("(file config/streamstop.toml)")
    assert origins["api.token"].endswith("(env STREAMSTOP_API__TOKEN)")
    assert origins["batch.max_size"].endswith("(default)")
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_without_a_file_says_so(tmp_path: Path) -> None:
    done = streamstop("check-config", cwd=tmp_path, env={"STREAMSTOP_API__TOKEN": TOKEN})

    assert done.returncode == 0
    assert done.stderr.startswith("streamstop: no config file")
    assert "--show-origin" not in done.stderr
    assert json.loads(done.stdout)["api"]["token"] == "***"


def test_run_reports_configuration_errors_as_json_log_lines(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_server = "x:1"\n[batch]\nmax_size = 0\n')

    done = streamstop("run", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 2
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [("config_error", "error")] * 2
    problems = [line["problem"] for line in lines]
    assert problems[0].startswith("kafka.bootstrap_server: unknown key; did you mean")
    assert problems[1].startswith("batch.max_size: ")


def test_run_names_both_ways_to_give_the_token_in_a_json_line(tmp_path: Path) -> None:
    done = streamstop("run", cwd=tmp_path)

    assert done.returncode == 2
    (line,) = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()]
    assert line["event"] == "config_error"
    assert "STREAMSTOP_API__TOKEN" in line["problem"]
    assert "api.token_file" in line["problem"]


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    # As `streamstop check-config | head -1`: the pipe is closed before anything is written.
    env = {**os.environ, "STREAMSTOP_API__TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamstop", "check-config"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 0
    assert b"Traceback" not in stderr
    assert b"BrokenPipeError" not in stderr


def test_a_metrics_port_in_use_is_one_configuration_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "STREAMSTOP_API__TOKEN": TOKEN,
            "STREAMSTOP_API__URL": "http://127.0.0.1:9/stop",
            "STREAMSTOP_OBSERVABILITY__HTTP_PORT": str(port),
            "STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        }
        done = streamstop("run", cwd=tmp_path, env=env, timeout_s=60)

    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    (problem,) = [line["problem"] for line in lines if line["event"] == "config_error"]
    assert problem.startswith(f"observability.http_port: cannot listen on port {port}")
    assert "Traceback" not in done.stdout + done.stderr
