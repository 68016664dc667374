"""Run `streamstop fake-api` as a real process for tests, and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TOKEN = "test-token"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as plain data."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """One request; 4xx/5xx are answers, not exceptions. `tls` verifies an https:// URL."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=tls) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


class FakeApi:
    """One `streamstop fake-api` process; its output goes to a file that outlives it."""

    def __init__(
        self, args: tuple[str, ...], output: Path, tls: ssl.SSLContext | None = None
    ) -> None:
        self.output = output
        self._tls = tls
        self._output_file = output.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamstop", "fake-api", "--port", "0", *args],
            stdout=self._output_file,
            stderr=subprocess.STDOUT,
        )
        try:
            listening = self._wait_listening(timeout_s=30)
        except BaseException:
            self.terminate()
            raise
        self.url: str = listening["url"]
        self.admin: str = listening["admin"]

    def _wait_listening(self, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Complete lines only: the last one may still be being written.
            for line in self.output.read_text().split("\n")[:-1]:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "fake_api_listening":
                        return dict(event)
            if self.proc.poll() is not None:
                raise AssertionError(f"fake-api exited early:\n{self.output.read_text()}")
            time.sleep(0.02)
        raise AssertionError(f"fake-api not listening after {timeout_s}s")

    def stop_request(
        self,
        uuids: list[str] | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """POST to the stop endpoint: `{"uuids": uuids}` unless a raw `body` is given."""
        sent = {"Content-Type": "application/json"}
        if token is not None:
            sent["Authorization"] = f"Basic {token}"
        sent.update(headers or {})
        payload = body if body is not None else json.dumps({"uuids": uuids or []}).encode()
        return http("POST", self.url, payload, sent, tls=self._tls)

    def _admin(self, method: str, name: str, data: Mapping[str, object] | None = None) -> Any:
        body = json.dumps(data).encode() if data is not None else None
        answer = http(method, f"{self.admin}/{name}", body, tls=self._tls)
        assert answer.status == 200, (answer.status, answer.body)
        return answer.json()

    def received(self) -> list[dict[str, Any]]:
        """Every stop request received since the last reset, in arrival order."""
        requests: list[dict[str, Any]] = self._admin("GET", "received")["requests"]
        return requests

    def set(self, **switches: object) -> dict[str, Any]:
        """Change fault switches at runtime; returns the new config (token masked)."""
        config: dict[str, Any] = self._admin("POST", "config", switches)
        return config

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self._admin("GET", "config")
        return config

    def reset(self) -> None:
        """Forget the received requests."""
        self._admin("POST", "reset", {})

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._admin("GET", "stats")
        return stats

    def terminate(self, timeout_s: float = 10) -> int:
        """Stop by pid: SIGTERM, then SIGKILL if it does not go. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self._output_file.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_fake_api(*args: str, tls: ssl.SSLContext | None = None) -> Iterator[FakeApi]:
    """A fake API started with `args`, always stopped by pid at the end; `tls` is how
    this side verifies it when `args` make it serve HTTPS."""
    with tempfile.TemporaryDirectory(prefix="fakeapi-") as tmp:
        fake = FakeApi(args, Path(tmp) / "output.log", tls)
        try:
            yield fake
        finally:
            fake.terminate()
