"""Run a `streamstop` command as a user would: a process, only the given STREAMSTOP_* set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def streamstop(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m streamstop ARGS` in `cwd`; the caller's STREAMSTOP_* variables are dropped
    so only `env` configures it. Returns the finished process (exit code, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMSTOP_")}
    return subprocess.run(
        [sys.executable, "-m", "streamstop", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
