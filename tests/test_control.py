"""The control socket without the kernel: the engine serves it on its store's
name, and requests are sent the way the CLI and the Python API send them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from harness import Harness, project, read_file, write_file
from motionfs.control import ControlError, request
from motionfs.daemon import Engine


async def ask(store: Path, payload: dict[str, Any]) -> Any:
    """control.request blocks, as in the CLI: run it off the engine's loop."""
    return await trio.to_thread.run_sync(request, store, payload)


def test_checkpoint_requests_reach_the_drive(h: Harness) -> None:
    """`motionfs checkpoint create/list/delete` by path: the checkpoint shows up in
    `.snapshots` and the reply carries what the CLI prints."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive, b"film")
        await write_file(drive, p, b"f", b"12345")
        made = await ask(h.root, {"op": "checkpoint.create", "path": "projects/film", "name": "v1"})
        assert made == {"name": "v1", "file_count": 1, "logical_size": 5}
        v1 = drive.lookup(drive.lookup(p, b".snapshots").ino, b"v1")
        assert await read_file(drive, drive.lookup(v1.ino, b"f").ino) == b"12345"
        listed = await ask(h.root, {"op": "checkpoint.list", "path": "./projects/film/"})
        assert [c["name"] for c in listed] == ["v1"]
        await ask(h.root, {"op": "checkpoint.delete", "path": "projects/film", "name": "v1"})
        assert e.checkpoints.summaries(p) == []

    h.run(body)


def test_api_requests_see_the_drive(h: Harness) -> None:
    """The Python API's requests (api.*) answer from the same tree."""

    async def body(e: Engine) -> None:
        p = await project(e.drive, b"film")
        found = await ask(h.root, {"op": "api.list_projects", "args": {}})
        assert [x["metadata"]["project_name"] for x in found] == ["film"]
        ns = found[0]["namespace_info"]["namespace_id"]
        assert e.drive.stat(p).ns_id == ns

    h.run(body)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"op": "checkpoint.frobnicate"}, "unknown request"),
        ({"op": "api.frobnicate", "args": {}}, "unknown API call"),
        ({"op": "checkpoint.list", "path": "projects/none"}, "does not exist"),
        ({"op": "checkpoint.list", "path": "projects"}, "is not a project folder"),
        (
            {"op": "checkpoint.create", "path": "projects/film", "name": "a b"},
            "invalid checkpoint name",
        ),
    ],
)
def test_refused_requests_are_one_line_errors(
    h: Harness, payload: dict[str, Any], words: str
) -> None:
    """A refused request is a ControlError with the reason; the daemon keeps serving."""

    async def body(e: Engine) -> None:
        await project(e.drive, b"film")
        with pytest.raises(ControlError, match=words) as info:
            await ask(h.root, payload)
        assert str(info.value) and "\n" not in str(info.value)
        assert await ask(h.root, {"op": "checkpoint.list", "path": "projects/film"}) == []

    h.run(body)


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    """The CLI's request to a store nobody serves names the store."""
    with pytest.raises(ControlError, match="no motionfs daemon is serving"):
        request(tmp_path, {"op": "checkpoint.list", "path": "projects/p"}, timeout=5)


def test_progress_lines_then_the_reply(h: Harness) -> None:
    """A create that asks for progress gets (done, total) reports of the project's store
    work, never done > total, before the same reply; a refused one still fails cleanly."""

    async def body(e: Engine) -> None:
        p = await project(e.drive, b"film")
        for i in range(30):
            await write_file(e.drive, p, f"f{i}".encode(), bytes([i]) * 4096)
        seen: list[tuple[int, int]] = []
        payload = {"op": "checkpoint.create", "path": "projects/film", "name": "v1"}
        made = await trio.to_thread.run_sync(
            lambda: request(h.root, payload, progress=lambda d, t: seen.append((d, t)))
        )
        assert made == {"name": "v1", "file_count": 30, "logical_size": 30 * 4096}
        assert seen and all(0 <= d <= t for d, t in seen)
        refused = {**payload, "name": "a b"}
        with pytest.raises(ControlError, match="invalid checkpoint name"):
            await trio.to_thread.run_sync(
                lambda: request(h.root, refused, progress=lambda d, t: None)
            )

    h.run(body)
