"""Run asyncio-only storage code on one dedicated event-loop thread.

chuk-artifacts and chuk-virtual-fs are asyncio libraries while pyfuse3 runs on
trio. The bridge owns one asyncio loop in a daemon thread; trio code awaits
`bridge.call(coro_fn, ...)` without blocking the FUSE loop, and synchronous
code (CLI, API, tests) uses `bridge.run(...)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class AsyncioBridge:
    def __init__(self, name: str = "motionfs-storage") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(
        self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        async def runner() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(runner(), self._loop)

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Blocking call from a non-asyncio thread."""
        return self.submit(fn, *args, **kwargs).result()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await an asyncio coroutine function from trio; cancellation propagates."""
        fut = self.submit(fn, *args, **kwargs)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: concurrent.futures.Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        fut.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            fut.cancel()
            raise
        return fut.result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
