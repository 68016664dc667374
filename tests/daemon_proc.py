"""Run `streamstop run` as a real process for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEST_TOKEN = "s3cr3t-T0ken-do-not-log"


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a TOML config with the given sections (flat keys, simple values)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1
) -> Any:
    """Poll `condition` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def sampled(seconds: float, interval_s: float = 0.2) -> Iterator[None]:
    """Yield every `interval_s` for `seconds`: for checking that something holds
    throughout a window (not for waiting on a condition: use `wait_for`)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
        time.sleep(interval_s)


def ticks(count: int, interval_s: float) -> Iterator[int]:
    """Yield 0..count-1, one every `interval_s` (a sampling cadence, not a wait)."""
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index * interval_s - time.monotonic()))
        yield index


class Daemon:
    """One `streamstop run` process; logs go to a file so they survive the process."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTOP_")}
        full_env.update(env or {})
        self._log_file = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamstop", "run", "--config", str(config)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self._offset = log_path.stat().st_size
        self.port: int | None = None

    def lines(self) -> list[dict[str, Any]]:
        """Every log line this process wrote so far, parsed (raises if one is not JSON)."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._offset)
            raw = handle.read().decode()
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def raw_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait_port(self, timeout_s: float = 30) -> int:
        def port() -> int | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.raw_log()[-4000:]}")
            found = self.events("http_listening")
            return int(found[0]["port"]) if found else None

        self.port = wait_for(port, timeout_s, "the daemon's http port")
        return self.port

    def get(self, path: str) -> tuple[int, str]:
        if self.port is None:
            self.wait_port()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout_s: float = 60) -> None:
        self.wait_port()
        wait_for(self.ready, timeout_s, "/readyz to answer 200")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        _, text = self.get("/metrics")
        return sum_metric(text, name, labels)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log_file.close()

    def stop(self) -> None:
        """Stop by pid: SIGTERM, then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


def exposed_metric_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition can answer, samples or not."""
    suffixes = {"counter": [""], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + suffix for suffix in suffixes.get(kind, [""]))
    return names


def sum_metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Parse Prometheus text and add up matching samples."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            total += sample.value
    return total


@contextlib.contextmanager
def running_daemon(
    config: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """A daemon that is always stopped by pid at the end."""
    daemon = Daemon(config, log_path, env)
    try:
        yield daemon
    finally:
        daemon.stop()
