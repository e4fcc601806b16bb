"""Single-flight: concurrent calls for one key share one run and its outcome.

Used by the token broker (one refresh/exchange per user) and by the authenticator's group
re-check (one userinfo call per user); each owner has its own instance and key space.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class SingleFlight:
    """Run at most one ``factory()`` per key at a time; concurrent callers share its result."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future] = {}

    def pending(self, key: str) -> bool:
        return key in self._inflight

    async def run(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(factory())
            self._inflight[key] = fut

            def _done(f, key=key):
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # retrieved here so a failure nobody awaits is not logged

            fut.add_done_callback(_done)
        return await asyncio.shield(fut)

    async def settle(self, key: str) -> None:
        """Wait until no call for ``key`` is in flight (its outcome is the caller's to read)."""
        while (fut := self._inflight.get(key)) is not None:
            try:
                await asyncio.shield(fut)
            except Exception:
                pass
