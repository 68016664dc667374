"""Interpreting stop API answers without stalling the event loop.

`core/interpret.py` decides what an answer means; this shell decides where that runs.
Parsing is CPU work that holds the GIL (orjson builds every object in one call: 0.6 s of
a 66 MB answer's 1.3 s even in a worker thread, measured), so answers up to
`INLINE_MAX_BYTES` are parsed inline and larger ones in a child process (`python -m
streamstop.interpreter`), where the loop cannot feel them and whose memory is returned
when it exits. A documented answer of 10,000 items is about 0.7 MB, so only abnormal
answers (padded, or full of items nobody asked for) ever pay for a process; one such
parse runs at a time, which also bounds their memory.

Never: parse a large answer on the event loop, or leave a child process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from streamstop.core.interpret import Interpretation, Kind, interpret_response

if TYPE_CHECKING:
    from streamstop.stopclient import Response

log = structlog.get_logger("streamstop.interpreter")

# About 20 ms of parsing on the loop (measured: 13 ms per MiB of items), and room for
# three full answers' worth of pretty-printed JSON.
INLINE_MAX_BYTES = 2 * 1024 * 1024
WORKER_FAILED_REASON = "the answer's parser process failed"
_WRITE_BYTES = 1024 * 1024
# So the child finds this very package, however the daemon was started.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class Interpreter:
    """Interprets answers: small ones inline, large ones in a child process."""

    def __init__(self, *, max_retry_after_s: float) -> None:
        self._max_retry_after_s = max_retry_after_s
        self._one_at_a_time = asyncio.Lock()

    async def interpret(
        self,
        response: Response,
        requested: Sequence[str],
        now_epoch: float,
        redact: Callable[[str], str],
    ) -> Interpretation:
        """What `response` means for `requested` (see `interpret_response`, `redact`
        included); a Retry-After is capped at `max_retry_after_s`."""
        status, body = response.status, response.body
        # Only a 2xx body can be large (the client reads 64 KiB of any other), and only
        # other answers need `redact`, whose registered secrets a child would not know.
        if len(body) <= INLINE_MAX_BYTES or not 200 <= status < 300:
            return interpret_response(
                status,
                response.headers,
                body,
                requested,
                now_epoch,
                redact,
                max_retry_after_s=self._max_retry_after_s,
            )
        job = {
            "status": status,
            # Only Retry-After matters; a plain dict of strings serialises.
            "headers": {str(name): value for name, value in response.headers.items()},
            "requested": list(requested),
            "now_epoch": now_epoch,
            "max_retry_after_s": self._max_retry_after_s,
        }
        async with self._one_at_a_time:
            return await _in_child(job, body)


async def _in_child(job: Mapping[str, Any], body: bytes) -> Interpretation:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamstop.interpreter",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        # Every line the pod writes is JSON: a traceback would not be. Its exit code is
        # logged instead.
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": _child_path()},
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        # The job on one line (orjson writes no newline), then the body as it came, a
        # slice at a time: one write of it all would copy it whole into the pipe's
        # buffer, on the loop.
        child.stdin.write(orjson.dumps(job) + b"\n")
        view = memoryview(body)
        with contextlib.suppress(ConnectionError):  # the child died: its exit code says
            for start in range(0, len(view), _WRITE_BYTES):
                child.stdin.write(view[start : start + _WRITE_BYTES])
                await child.stdin.drain()
            child.stdin.close()
        out = await child.stdout.read()
        await child.wait()
    except BaseException:
        # Cancelled (shutdown): the child must not outlive the wait for it.
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode != 0:
        # Killed (say, by the OOM killer) or broken: the next answer gets a new child.
        log.warning("api_answer_parser_failed", bytes=len(body), exit_code=child.returncode)
        return Interpretation(Kind.RETRY, {}, [], WORKER_FAILED_REASON, None)
    verdict = orjson.loads(out)
    return Interpretation(
        Kind(verdict["kind"]),
        verdict["codes"],
        verdict["missing"],
        verdict["reason"],
        verdict["retry_after_s"],
        verdict["malformed_items"],
    )


def _child_path() -> str:
    """PYTHONPATH for the child: this package first, however the daemon was started."""
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([_PACKAGE_ROOT, inherited] if inherited else [_PACKAGE_ROOT])


def _child_main() -> None:
    """The child: a job line and a body on stdin, the interpretation as JSON on stdout."""
    data = sys.stdin.buffer.read()
    line, _, body = data.partition(b"\n")
    job = orjson.loads(line)
    verdict = interpret_response(
        job["status"],
        job["headers"],
        body,
        job["requested"],
        job["now_epoch"],
        max_retry_after_s=job["max_retry_after_s"],
    )
    sys.stdout.buffer.write(
        orjson.dumps(
            {
                "kind": verdict.kind.value,
                "codes": verdict.codes,
                "missing": verdict.missing,
                "reason": verdict.reason,
                "retry_after_s": verdict.retry_after_s,
                "malformed_items": verdict.malformed_items,
            }
        )
    )


if __name__ == "__main__":
    _child_main()
