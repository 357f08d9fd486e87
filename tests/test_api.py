"""The seed's Python API (ArtifactStorageManager) on a motionfs store, with and without
a mounted drive, and interop with the mount both ways."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import NATIVE
from motionfs import ArtifactStorageManager, ProjectMetadata, StorageScope

pytestmark = pytest.mark.skipif(NATIVE, reason="motionfs API")


def appears(path: Path, timeout: float = 1.0, present: bool = True) -> bool:
    """The issue's promise: changes through the API show in the mount within a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() == present:
            return True
        time.sleep(0.02)
    return path.exists() == present


def test_api_and_mount_see_each_other(drive: Any, tmp_path: Path) -> None:
    """Created through the API: in the mount within a second; and the reverse."""

    async def body() -> None:
        async with ArtifactStorageManager(store=drive.store, user_id="alice") as api:
            project = await api.create_project("film", "tech", 30, 1920, 1080)
            ns = project.namespace_info.namespace_id
            assert project.metadata.project_name == "film"
            assert appears(drive.path / "projects" / "film")
            meta = json.loads(os.getxattr(drive.path / "projects" / "film", "user.motion.json"))
            assert meta["fps"] == 30
            (drive.path / "projects" / "film" / "Root.tsx").write_text("export {}")
            (drive.path / "projects" / "other").mkdir()
            names = {p.metadata.project_name for p in await api.list_projects()}
            assert names == {"film", "other"}
            assert await api.list_projects(scope=StorageScope.SANDBOX) == []

            updated = project.metadata.model_copy(update={"fps": 60, "theme": "finance"})
            await api.update_project_metadata(ns, updated)
            assert os.getxattr(drive.path / "projects" / "film", "user.motion.fps") == b"60"

            video = os.urandom(200_000)
            render = await api.store_render(ns, video, "mp4", "1920x1080", 30, 45.5, codec="h264")
            rns = render.namespace_info.namespace_id
            assert render.metadata.project_namespace_id == ns
            files = list((drive.path / "renders" / "film").iterdir())
            assert len(files) == 1 and files[0].read_bytes() == video
            assert await api.read_render_data(rns) == video
            got = await api.get_render(rns)
            assert got.metadata.checksum and got.metadata.file_size_bytes == 200_000

            png = tmp_path / "logo.png"
            Image.new("RGB", (64, 48)).save(png)
            asset = await api.store_asset(png.read_bytes(), "image", "image/png", tags=["bg"])
            assert (await api.get_asset(asset.namespace_info.namespace_id)).metadata.tags == ["bg"]
            assert await api.read_asset_data(asset.namespace_info.namespace_id) == png.read_bytes()

            cp = await api.create_checkpoint(ns, "v1", "first")
            assert cp.checkpoint_id == "v1"
            assert (drive.path / "projects" / "film" / ".snapshots" / "v1" / "Root.tsx").exists()
            (drive.path / "projects" / "film" / "Root.tsx").write_text("changed")
            await api.restore_checkpoint(ns, "v1")
            assert (drive.path / "projects" / "film" / "Root.tsx").read_text() == "export {}"
            names_cp = [c.name for c in await api.list_checkpoints(ns)]
            assert names_cp[0] == "v1" and names_cp[1].startswith("auto-")
            await api.delete_checkpoint(ns, "v1")
            assert [c.name for c in await api.list_checkpoints(ns)] == names_cp[1:]

            vfs = await api.get_project_vfs(ns)
            assert await vfs.read_file("/Root.tsx") == b"export {}"

            await api.delete_project(ns)
            assert appears(drive.path / "projects" / "film", present=False)

    asyncio.run(body())


@pytest.mark.local_store  # hard links are the local store's
def test_writes_through_the_project_vfs_leave_checkpoints_alone(drive: Any) -> None:
    """A checkpoint's objects share their bytes with the store's files on a
    local store: the VFS the API hands out replaces a file, never rewrites it."""
    project = drive.project("film")
    (project / "Root.tsx").write_bytes(b"export const v = 1;")
    os.mkdir(project / ".snapshots" / "v1")
    ns = os.getxattr(project, "user.motion.namespace_id").decode()
    objects = list(drive.store.glob("data/ns/*/.chuk-motion/objects/*/*"))
    assert [o.read_bytes() for o in objects] == [b"export const v = 1;"]

    async def body() -> None:
        async with ArtifactStorageManager(store=drive.store) as api:
            vfs = await api.get_project_vfs(ns)
            assert await vfs.write_file("/Root.tsx", b"changed by the API")
            done = await vfs.batch_write_files({"/Root.tsx": b"twice", "/New.tsx": b"new"})
            assert [r.success for r in done] == [True, True]
            assert await vfs.read_file("/Root.tsx") == b"twice"

    asyncio.run(body())
    assert [o.read_bytes() for o in objects] == [b"export const v = 1;"]
    assert (project / ".snapshots" / "v1" / "Root.tsx").read_bytes() == b"export const v = 1;"
    assert (project / "Root.tsx").read_bytes() == b"export const v = 1;"  # the cache's copy


@pytest.mark.local_store  # the API starts a store by its directory: a local store
def test_api_without_a_mount_then_mount(make_drive: Any, tmp_path: Path) -> None:
    """Nothing mounted: the API runs the engine itself; a later mount shows its work."""
    store = tmp_path / "apistore"

    async def body() -> str:
        async with ArtifactStorageManager(store=store) as api:
            project = await api.create_project("solo", "tech", 24, 1280, 720)
            await api.store_render(
                project.namespace_info.namespace_id, b"frames", "webm", "1280x720", 24, 1.0
            )
            with pytest.raises(Exception, match="invalid"):
                await api.update_project_metadata(
                    project.namespace_info.namespace_id,
                    ProjectMetadata.model_construct(project_name="solo", fps=-1),
                )
            return project.namespace_info.namespace_id

    ns = asyncio.run(body())
    drive = make_drive(store=store)
    assert (drive.path / "projects" / "solo").is_dir()
    renders = list((drive.path / "renders" / "solo").iterdir())
    assert [r.read_bytes() for r in renders] == [b"frames"]
    meta = json.loads(os.getxattr(drive.path / "projects" / "solo", "user.motion.json"))
    assert meta["fps"] == 24 and ns.startswith("ns-")


def test_api_finds_what_the_drive_holds(drive: Any) -> None:
    """Renders and assets written through the mount are found by list_renders and
    list_assets, with the namespace id the drive shows as user.motion.namespace_id."""
    project = drive.path / "projects" / "film"
    project.mkdir()
    (drive.path / "renders" / "film" / "cut1.mp4").write_bytes(os.urandom(5000))
    (drive.path / "assets" / "music").mkdir()
    song = drive.path / "assets" / "music" / "theme.wav"
    song.write_bytes(b"RIFF" + os.urandom(3000))
    logo = drive.path / "assets" / "logo.png"
    logo.write_bytes(b"\x89PNG" + os.urandom(100))
    deadline = time.monotonic() + 10  # metadata appears once the content is stored
    while time.monotonic() < deadline:
        try:
            os.setxattr(song, "user.motion.tags", b"score,intro")
            break
        except OSError:
            time.sleep(0.1)
    render_ns = os.getxattr(
        drive.path / "renders" / "film" / "cut1.mp4", "user.motion.namespace_id"
    )
    project_ns = os.getxattr(project, "user.motion.namespace_id").decode()

    async def body() -> None:
        async with ArtifactStorageManager(store=drive.store, user_id="alice") as api:
            renders = await api.list_renders()
            assert [r.drive_path for r in renders] == ["/renders/film/cut1.mp4"]
            assert renders[0].namespace_info.namespace_id == render_ns.decode()
            mine = await api.list_renders(project_namespace_id=project_ns)
            assert [r.namespace_info.namespace_id for r in mine] == [render_ns.decode()]
            assert await api.list_renders(project_namespace_id="ns-none") == []
            got = await api.get_render(render_ns.decode())
            assert got.metadata.project_namespace_id == project_ns
            assets = await api.list_assets()
            assert [a.drive_path for a in assets] == ["/assets/logo.png", "/assets/music/theme.wav"]
            tagged = await api.list_assets(tags=["intro"])
            assert [a.drive_path for a in tagged] == ["/assets/music/theme.wav"]
            assert await api.list_assets(tags=["intro", "outro"]) == []
            assert await api.list_assets(scope=StorageScope.SANDBOX) == []

    asyncio.run(body())
    with pytest.raises(OSError):
        os.setxattr(song, "user.motion.namespace_id", b"ns-other")
