"""Wakes blocking queries when a write commits.

Writes commit on worker threads; blocking queries wait on the event loop. One event per
commit generation is enough: a waiter re-checks its own table's index after waking, so
a write to another table costs it one comparison, not a spurious response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class WatchHub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Thread-safe; called after each commit."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait(self, current_index: Callable[[], int], min_index: int, timeout: float) -> None:
        """Return once current_index() > min_index, or when timeout seconds have passed."""
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        deadline = time.monotonic() + timeout
        while current_index() <= min_index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = self._event
            assert event is not None
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return
