"""Failure classification shared by every backend: what callers see when a
store operation fails, and whether retrying it can ever help."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from motionfs.errors import FsError, StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")


class SourceMissing(Exception):
    """A copy's source is gone from the store: retrying cannot bring it back."""


class ContentChanged(StoreUnavailable):
    """The object changed between two ranged reads of one cached generation."""


def store_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The libraries retry, then raise anything (RetryError, botocore errors...):
    to callers every backend failure is StoreUnavailable, which they retry or
    report as EIO. SourceMissing passes as it is (the journal parks it)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (StoreUnavailable, SourceMissing, asyncio.CancelledError):
            raise
        except Exception as e:
            raise StoreUnavailable(f"{type(e).__name__}: {e}") from e

    return wrapper


# Failures that the same operation will meet again however often it is retried.
PERMANENT_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.EFBIG}
)
PERMANENT_S3_CODES = frozenset(
    {"KeyTooLongError", "InvalidArgument", "EntityTooLarge", "InvalidObjectName"}
)


def is_permanent(error: BaseException) -> bool:
    """True when retrying the operation that failed with `error` cannot help
    (a name or path too long, a file in the way, an object S3 refuses), False
    for failures that may pass (a full disk, I/O errors, the endpoint down,
    timeouts, 5xx, SlowDown) and for anything unknown.

    The first error with an errno (OSError, FsError) or an S3 error code
    decides; wrappers without one (StoreUnavailable from `store_errors`, the
    libraries' retry errors, exception groups) are looked through, by their
    `__cause__`, `__context__`, members or last attempt.
    """
    queue: list[BaseException] = [error]
    seen: set[int] = set()
    while queue:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        verdict = _permanence(e)
        if verdict is not None:
            return verdict
        queue.extend(_underlying(e))
    return False


def _permanence(e: BaseException) -> bool | None:
    if isinstance(e, OSError | FsError) and isinstance(e.errno, int):
        return e.errno in PERMANENT_ERRNOS
    response = getattr(e, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code) in PERMANENT_S3_CODES
    return None


def _underlying(e: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    if e.__cause__ is not None:
        found.append(e.__cause__)
    if e.__context__ is not None and not e.__suppress_context__:
        found.append(e.__context__)
    if isinstance(e, BaseExceptionGroup):
        found.extend(e.exceptions)
    last = getattr(e, "last_attempt", None)  # tenacity's RetryError
    if last is not None:
        with contextlib.suppress(Exception):
            inner = last.exception()
            if isinstance(inner, BaseException):
                found.append(inner)
    return found
