"""Every stop request the simulator received, for tests to read back.

Each request is serialised once, when it arrives, and kept as bytes: a million uuids cost
about 40 MB and reading them back is a join, not a walk over Python objects.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import orjson


class Recorder:
    """Stop requests received so far, optionally also appended to a JSON-lines file."""

    def __init__(self, record_file: Path | None = None) -> None:
        self._entries: list[bytes] = []
        self._by_status: Counter[int] = Counter()
        self._uuids_total = 0
        # Start times (monotonic) of the requests of the last second, and the most seen.
        self._last_second: deque[float] = deque()
        self._max_in_1s = 0
        self._file: BinaryIO | None = record_file.open("ab") if record_file else None

    def started(self, at: float) -> None:
        """Count a stop request that started at monotonic time `at` (in start order), for
        the busiest 1-second window."""
        window = self._last_second
        window.append(at)
        while window[0] <= at - 1.0:
            window.popleft()
        self._max_in_1s = max(self._max_in_1s, len(window))

    def add(self, request_id: str | None, uuids: Sequence[object], status: int, at: float) -> None:
        """Remember one stop request: its X-Request-Id, uuids as sent, status, arrival time."""
        entry = orjson.dumps({"requestId": request_id, "uuids": uuids, "status": status, "at": at})
        self._entries.append(entry)
        self._by_status[status] += 1
        self._uuids_total += len(uuids)
        if self._file is not None:
            # Flushed per request so a test can read it after the process is gone.
            self._file.write(entry + b"\n")
            self._file.flush()

    def received_json(self) -> bytes:
        """`{"requests": [...], "uuids_total": n}`, every request in arrival order."""
        return b'{"requests":[%s],"uuids_total":%d}' % (
            b",".join(self._entries),
            self._uuids_total,
        )

    def stats(self) -> dict[str, object]:
        """Counts: requests, requests by HTTP status, uuids received (as sent), and the
        most requests started within any 1 second."""
        return {
            "requests": len(self._entries),
            "by_status": {str(status): n for status, n in sorted(self._by_status.items())},
            "uuids_total": self._uuids_total,
            "max_requests_in_1s": self._max_in_1s,
        }

    def reset(self) -> None:
        """Forget what was received (the record file, an append-only log, is kept)."""
        self._entries.clear()
        self._by_status.clear()
        self._uuids_total = 0
        self._last_second.clear()
        self._max_in_1s = 0

    def close(self) -> None:
        """Close the record file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
