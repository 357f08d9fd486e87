"""chuk-motion metadata through the Drive, without the kernel: the user.motion.*
xattrs of projects, renders and assets, and what the catalog (the Python API's
side of the daemon) sees of files made on the drive."""

from __future__ import annotations

import errno
import json
from pathlib import Path

from harness import CTX, Harness, fs_error, ns_of, project, read_file, write_file
from motionfs.daemon import Engine
from motionfs.layout import ROOT_INO
from motionfs.motion.models import AssetInfo, RenderInfo, StorageScope
from motionfs.motion.xattrs import MAX_JSON


def motion(e: Engine, ino: int, field: str) -> bytes:
    return e.drive.getxattr(ino, f"user.motion.{field}".encode())


def area(e: Engine, name: bytes) -> int:
    return e.drive.lookup(ROOT_INO, name).ino


def test_a_project_folder_carries_its_project_metadata(h: Harness) -> None:
    """user.motion.* of a project: listed, readable, editable where the model
    allows it (validated: EINVAL), derived fields EACCES, never removable."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive, b"film")
        listed = drive.listxattr(p)
        assert {b"user.motion.json", b"user.motion.namespace_id", b"user.motion.fps"} <= set(listed)
        assert motion(e, p, "project_name") == b"film"
        assert motion(e, p, "namespace_id") == ns_of(drive, p).encode()
        drive.setxattr(p, b"user.motion.fps", b"60")
        assert motion(e, p, "fps") == b"60"
        assert json.loads(motion(e, p, "json"))["fps"] == 60
        with fs_error(errno.EINVAL):
            drive.setxattr(p, b"user.motion.fps", b"-1")
        with fs_error(errno.EINVAL):
            drive.setxattr(p, b"user.motion.no_such_field", b"x")
        for derived in (b"user.motion.json", b"user.motion.project_name"):
            with fs_error(errno.EACCES):
                drive.setxattr(p, derived, b"x")
        with fs_error(errno.EACCES):
            drive.removexattr(p, b"user.motion.fps")
        assert motion(e, p, "fps") == b"60"
        drive.setxattr(p, b"user.note", b"plain xattrs still work")
        assert drive.getxattr(p, b"user.note") == b"plain xattrs still work"

    h.run(body)


def test_asset_tags_are_capped_by_the_size_of_user_motion_json(h: Harness) -> None:
    """An edit that would make user.motion.json exceed 16 KiB is EINVAL and
    changes nothing; a smaller one is kept."""

    async def body(e: Engine) -> None:
        drive = e.drive
        logo = await write_file(drive, area(e, b"assets"), b"logo.png", b"\x89PNG")
        drive.setxattr(logo, b"user.motion.tags", b"brand, dark")
        assert motion(e, logo, "tags") == b"brand,dark"
        too_many = ",".join(f"tag-{i:05d}" for i in range(MAX_JSON // 8)).encode()
        with fs_error(errno.EINVAL):
            drive.setxattr(logo, b"user.motion.tags", too_many)
        assert motion(e, logo, "tags") == b"brand,dark"
        assert len(motion(e, logo, "json")) <= MAX_JSON

    h.run(body)


def test_a_render_knows_its_project_and_a_render_field_is_read_only(h: Harness) -> None:
    """A file in renders/<project>/ is a render of that project's namespace."""

    async def body(e: Engine) -> None:
        drive = e.drive
        p = await project(drive, b"film")
        film_renders = drive.lookup(area(e, b"renders"), b"film").ino
        clip = await write_file(drive, film_renders, b"clip.mp4", b"not really mp4")
        assert motion(e, clip, "project_namespace_id") == ns_of(drive, p).encode()
        assert motion(e, clip, "namespace_id") == ns_of(drive, clip).encode()
        with fs_error(errno.EACCES):
            drive.setxattr(clip, b"user.motion.codec", b"h264")
        src = await drive.mkdir(p, b"src", 0o755, CTX)
        assert drive.listxattr(src.ino) == []  # a plain folder has no model

    h.run(body)


def test_the_catalog_lists_renders_and_assets_made_on_the_drive(h: Harness) -> None:
    """list_renders/list_assets (the catalog's list_blobs) see files written on the
    drive, with their namespaces, drive paths and the tags set as xattrs."""

    async def body(e: Engine) -> None:
        drive, catalog = e.drive, e.catalog
        film = await project(drive, b"film")
        await project(drive, b"other")
        renders = area(e, b"renders")
        clip = await write_file(drive, drive.lookup(renders, b"film").ino, b"a.mp4", b"1")
        await write_file(drive, drive.lookup(renders, b"other").ino, b"b.mp4", b"2")
        logo = await write_file(drive, area(e, b"assets"), b"logo.png", b"3")
        await write_file(drive, area(e, b"assets"), b"font.ttf", b"4")
        drive.setxattr(logo, b"user.motion.tags", b"brand,dark")

        film_ns = ns_of(drive, film)
        mine = catalog.list_blobs("render", None, {"project_namespace_id": film_ns})
        assert [(type(r), r.drive_path) for r in mine] == [(RenderInfo, "/renders/film/a.mp4")]
        assert mine[0].namespace_info.namespace_id == ns_of(drive, clip)
        every = catalog.list_blobs("render", StorageScope.USER, {"project_namespace_id": None})
        assert [r.drive_path for r in every] == ["/renders/film/a.mp4", "/renders/other/b.mp4"]
        tagged = catalog.list_blobs("asset", None, {"tags": ["brand"], "asset_type": None})
        assert [(type(a), a.drive_path) for a in tagged] == [(AssetInfo, "/assets/logo.png")]
        assets = catalog.list_blobs("asset", None, {"tags": None, "asset_type": None})
        assert [a.drive_path for a in assets] == ["/assets/font.ttf", "/assets/logo.png"]
        assert catalog.list_blobs("render", StorageScope.SANDBOX, {}) == []

    h.run(body)


def test_what_the_catalog_stores_is_a_file_on_the_drive(h: Harness, tmp_path: Path) -> None:
    """A project and an asset made through the catalog are a folder and a file on
    the drive at once, with the caller's metadata as xattrs."""
    source = tmp_path / "upload.png"
    source.write_bytes(b"\x89PNG upload")

    async def body(e: Engine) -> None:
        drive, catalog = e.drive, e.catalog
        made = await catalog.create_project("promo", StorageScope.USER, {"fps": 24})
        folder = drive.lookup(drive.lookup(ROOT_INO, b"projects").ino, b"promo")
        assert ns_of(drive, folder.ino) == made.namespace_info.namespace_id
        assert motion(e, folder.ino, "fps") == b"24"
        fields = {"asset_type": "image", "mime_type": "image/png", "tags": ["upload"]}
        asset = await catalog.store_asset(source, StorageScope.USER, fields)
        path = catalog.get_blob(asset.namespace_info.namespace_id).drive_path
        assert path is not None and path.startswith("/assets/asset-")
        node = drive.lookup(area(e, b"assets"), path.removeprefix("/assets/").encode())
        assert await read_file(drive, node.ino) == b"\x89PNG upload"
        assert motion(e, node.ino, "tags") == b"upload"

    h.run(body)
