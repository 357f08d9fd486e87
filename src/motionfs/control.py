"""The daemon's control socket: requests the file system API cannot express.

`motionfs checkpoint ...` runs in another process, but checkpoints must be
created and restored by the daemon that owns the index and the kernel's
caches. The daemon listens on an abstract Unix socket named after its store;
only the daemon's own user and root may talk to it (checked with
SO_PEERCRED). One JSON request per connection, one JSON reply. A checkpoint
create or restore that asks for `progress` first gets lines
`{"progress": {"done": N, "total": M}}` while the project's store work drains.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel

from motionfs.errors import FsError, StoreUnavailable
from motionfs.fuse.drive import Drive
from motionfs.layout import ROOT_INO, Role
from motionfs.motion.catalog import Catalog
from motionfs.motion.models import StorageScope

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
PROGRESS_EVERY = 0.25  # seconds between progress lines
PROGRESS_OPS = {"checkpoint.create", "checkpoint.restore"}
Progress = Callable[[int, int], None]


def socket_name(store: Path) -> bytes:
    digest = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:24]
    return b"\0motionfs-" + digest.encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class ControlError(Exception):
    """A request the daemon refused; the message is for the user."""


def request(
    store: Path, payload: dict[str, Any], timeout: float = 3600, progress: Progress | None = None
) -> Any:
    """Send one request to the daemon serving `store` (blocking; for the CLI).
    With `progress`, a long request reports (done, total) as it goes."""
    if progress is not None:
        payload = {**payload, "progress": True}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_name(store))
        except OSError as e:
            raise ControlError(f"no motionfs daemon is serving {store}") from e
        sock.sendall(json.dumps(payload).encode() + b"\n")
        with sock.makefile("rb") as replies:
            for line in replies:
                message = json.loads(line)
                if "progress" not in message:
                    break
                if progress is not None:
                    progress(int(message["progress"]["done"]), int(message["progress"]["total"]))
            else:
                message = {"ok": False, "error": "the daemon closed the connection"}
    reply: dict[str, Any] = message
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply.get("result")


class ControlServer:
    def __init__(self, drive: Drive, catalog: Catalog, store: Path) -> None:
        self.drive = drive
        self.store = store
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "checkpoint.create": self._create,
            "checkpoint.list": self._list,
            "checkpoint.delete": self._delete,
            "checkpoint.restore": self._restore,
            "checkpoint.diff": self._diff,
        }
        self.catalog = catalog

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(socket_name(self.store))
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                reply = await self._answer(stream)
            except Exception as e:  # a bad request must not take the daemon down
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {e}"}
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(json.dumps(reply).encode() + b"\n")

    async def _answer(self, stream: trio.SocketStream) -> dict[str, Any]:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            return {"ok": False, "error": "permission denied: not the drive's owner"}
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
        req = json.loads(data)
        op = str(req.get("op", ""))
        handler = self._api if op.startswith("api.") else self.handlers.get(op)
        if handler is None:
            return {"ok": False, "error": f"unknown request {req.get('op')!r}"}
        try:
            if op in PROGRESS_OPS and req.get("progress"):
                return {"ok": True, "result": await self._with_progress(stream, req, handler)}
            return {"ok": True, "result": await handler(req)}
        except FsError as e:
            return {"ok": False, "error": e.why or os.strerror(e.errno)}
        except StoreUnavailable as e:
            return {"ok": False, "error": f"the store is unavailable: {e}"}

    async def _with_progress(
        self,
        stream: trio.SocketStream,
        req: dict[str, Any],
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
    ) -> Any:
        """Run `handler`, telling the client how much of the project's store work
        (the journal entries a checkpoint or restore waits for) is done."""
        ns_id = self.drive.tree.stat(self._project(req)).ns_id
        index = self.drive.tree.index
        reporter = trio.CancelScope()
        outcome: list[Any] = []
        failure: list[Exception] = []

        async def run() -> None:
            try:
                outcome.append(await handler(req))
            except Exception as e:  # raised below, outside the nursery
                failure.append(e)
            finally:
                reporter.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with reporter:
                total = 0
                while True:
                    pending = index.pending_count(ns_id)
                    total = max(total, pending)
                    line = {"progress": {"done": total - pending, "total": total}}
                    try:
                        await stream.send_all(json.dumps(line).encode() + b"\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # the client went away: the work still finishes
                    await trio.sleep(PROGRESS_EVERY)
        if failure:
            raise failure[0]
        return outcome[0]

    async def _api(self, req: dict[str, Any]) -> Any:
        """The Python API's requests: seed-API operations by namespace id."""
        c = self.catalog
        method = req["op"].removeprefix("api.")
        a = req.get("args", {})
        scope = StorageScope(a["scope"]) if a.get("scope") else None
        result: Any
        if method == "create_project":
            result = await c.create_project(
                a["project_name"], scope or StorageScope.USER, a["fields"]
            )
        elif method == "get_project":
            result = c.get_project(a["namespace_id"])
        elif method == "update_project":
            result = c.update_project(a["namespace_id"], a["metadata"])
        elif method == "list_projects":
            result = c.list_projects(scope, a.get("user_id"))
        elif method == "delete":
            c.delete(a["namespace_id"])
            result = None
        elif method == "store_render":
            result = await c.store_render(
                a["project_namespace_id"],
                Path(a["source"]),
                scope or StorageScope.USER,
                a["fields"],
            )
        elif method == "store_asset":
            result = await c.store_asset(Path(a["source"]), scope or StorageScope.USER, a["fields"])
        elif method == "get_blob":
            result = c.get_blob(a["namespace_id"])
        elif method == "list_blobs":
            result = c.list_blobs(a["kind"], scope, a["filters"])
        elif method == "read_blob":
            await c.read_blob(a["namespace_id"], Path(a["dest"]))
            result = None
        elif method == "create_checkpoint":
            result = await c.create_checkpoint(a["namespace_id"], a["name"], a.get("description"))
        elif method == "list_checkpoints":
            result = c.list_checkpoints(a["namespace_id"])
        elif method == "restore_checkpoint":
            await c.restore_checkpoint(a["namespace_id"], a["checkpoint_id"])
            result = None
        elif method == "delete_checkpoint":
            c.delete_checkpoint(a["namespace_id"], a["checkpoint_id"])
            result = None
        else:
            raise FsError(errno.EINVAL, f"unknown API call {method}")
        return _jsonable(result)

    def _project(self, req: dict[str, Any]) -> int:
        """The inode of the project folder at `path` (relative to the mountpoint)."""
        ino = ROOT_INO
        for part in str(req.get("path", "")).split("/"):
            if not part or part == ".":
                continue
            found = self.drive.tree.index.lookup(ino, os.fsencode(part))
            if found is None:
                raise FsError(errno.ENOENT, f"{req.get('path')} does not exist")
            ino = found
        node = self.drive.tree.stat(ino)
        if node.role != Role.PROJECT.value:
            raise FsError(errno.EINVAL, f"{req.get('path') or '/'} is not a project folder")
        return ino

    async def _create(self, req: dict[str, Any]) -> dict[str, Any]:
        cp = await self.drive.create_checkpoint(
            self._project(req), os.fsencode(req["name"]), req.get("description")
        )
        return {"name": cp.name, "file_count": cp.file_count, "logical_size": cp.logical_size}

    async def _list(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        summaries = self.drive.checkpoints.summaries(self._project(req))
        return [s.model_dump(mode="json") for s in summaries]

    async def _delete(self, req: dict[str, Any]) -> None:
        self.drive.delete_checkpoint(self._project(req), os.fsencode(req["name"]))

    async def _restore(self, req: dict[str, Any]) -> dict[str, str]:
        auto = await self.drive.checkpoints.restore(self._project(req), req["name"])
        return {"safety_checkpoint": auto}

    async def _diff(self, req: dict[str, Any]) -> list[dict[str, str]]:
        changes = await self.drive.checkpoints.diff(
            self._project(req), req["name"], req.get("other")
        )
        return [c.model_dump() for c in changes]
