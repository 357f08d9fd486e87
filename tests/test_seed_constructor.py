"""The seed's constructor: `provider_type` and `provider_config` choose the store,
and what cannot be served is refused with a clear error instead of ignored."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from motionfs import ArtifactStorageManager, ProviderType
from s3server import S3Server


def test_filesystem_store_from_provider_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FILESYSTEM with `root_path` (`~` expanded) is the store folder; its records say so."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    async def body() -> None:
        config = {"root_path": "~/stores/one"}
        async with ArtifactStorageManager(ProviderType.FILESYSTEM, config, user_id="al") as api:
            project = await api.create_project("film", "tech", 30, 1920, 1080)
            assert project.namespace_info.provider_type is ProviderType.FILESYSTEM
        async with ArtifactStorageManager(store="~/stores/one", user_id="al") as api:
            assert [p.metadata.project_name for p in await api.list_projects()] == ["film"]

    asyncio.run(body())
    assert (tmp_path / "stores" / "one" / "index.sqlite").is_file()
    assert not (tmp_path / "~").exists()


def test_s3_store_from_provider_config(tmp_path: Path, s3_server: S3Server) -> None:
    """S3 with bucket, prefix and endpoint: the bytes go to the bucket, the index to `index`,
    and a second manager on the same config finds what the first made."""
    config = {
        "bucket_name": s3_server.bucket,
        "prefix": "seed/api",
        "endpoint_url": s3_server.endpoint,
        "index": str(tmp_path / "index"),
    }

    async def body() -> None:
        async with ArtifactStorageManager(ProviderType.S3, config, user_id="al") as api:
            project = await api.create_project("film", "tech", 30, 1920, 1080)
            assert project.namespace_info.provider_type is ProviderType.S3
            ns = project.namespace_info.namespace_id
            render = await api.store_render(ns, b"frames" * 1000, "mp4", "64x48", 30, 1.0)
        async with ArtifactStorageManager(ProviderType.S3, config, user_id="al") as api:
            assert [p.metadata.project_name for p in await api.list_projects()] == ["film"]
            rns = render.namespace_info.namespace_id
            assert await api.read_render_data(rns) == b"frames" * 1000

    asyncio.run(body())
    keys = s3_server.objects("seed/api/")
    assert "seed/api/store.json" in keys
    assert any(k.endswith("/_data") and size == 6000 for k, size in keys.items()), keys


def test_memory_store_is_gone_at_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEMORY (the seed's default): an ephemeral in-process store; its records say memory,
    and cleanup() leaves nothing behind, not even the private folder of its index."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where private folders go

    async def body() -> None:
        async with ArtifactStorageManager(ProviderType.MEMORY, user_id="al") as api:
            assert api.store.is_relative_to(tmp_path) and api.store.is_dir()
            project = await api.create_project("film", "tech", 30, 1920, 1080)
            assert project.namespace_info.provider_type is ProviderType.MEMORY
            ns = project.namespace_info.namespace_id
            render = await api.store_render(ns, b"frames" * 100, "mp4", "64x48", 30, 1.0)
            got = await api.read_render_data(render.namespace_info.namespace_id)
            assert got == b"frames" * 100
            assert [p.metadata.project_name for p in await api.list_projects()] == ["film"]
        async with ArtifactStorageManager(ProviderType.MEMORY, user_id="al") as api:
            assert await api.list_projects() == []

    asyncio.run(body())
    assert list(tmp_path.iterdir()) == []


def test_sqlite_store_from_provider_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE with `db_path` (`~` expanded): every byte in that one file, the index
    beside it; the records say vfs-sqlite; a second manager finds what the first
    made, and the project's VFS reads its files from the file."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = {"db_path": "~/one.db"}

    async def body() -> None:
        async with ArtifactStorageManager(ProviderType.SQLITE, config, user_id="al") as api:
            project = await api.create_project("film", "tech", 30, 1920, 1080)
            assert project.namespace_info.provider_type is ProviderType.SQLITE
            ns = project.namespace_info.namespace_id
            render = await api.store_render(ns, b"frames" * 1000, "mp4", "64x48", 30, 1.0)
            assert render.namespace_info.provider_type is ProviderType.SQLITE
        async with ArtifactStorageManager(ProviderType.SQLITE, config, user_id="al") as api:
            assert [p.metadata.project_name for p in await api.list_projects()] == ["film"]
            assert await api.read_render_data(render.namespace_info.namespace_id) == (
                b"frames" * 1000
            )
            vfs = await api.get_project_vfs(ns)
            meta = await vfs.read_file("/.chuk-motion/metadata.json")
            assert b'"project_name":"film"' in meta.replace(b" ", b"")

    asyncio.run(body())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.db", "one.db.motionfs"]
    assert (tmp_path / "one.db.motionfs" / "index.sqlite").is_file()


@pytest.mark.parametrize(
    ("provider_type", "config", "store", "message"),
    [
        (ProviderType.MEMORY, {"size": "1G"}, None, "unknown provider_config"),
        (ProviderType.SQLITE, {}, None, "db_path"),
        (ProviderType.SQLITE, {"db_path": "x.db", "size": "1G"}, None, "unknown provider_config"),
        (ProviderType.SQLITE, {"db_path": "sub/"}, None, "name the store file"),
        (ProviderType.S3, {}, None, "bucket_name"),
        (ProviderType.S3, {"bucket_name": "b", "region": "x"}, None, "unknown provider_config"),
        (ProviderType.FILESYSTEM, {"root": "/x"}, None, "unknown provider_config"),
        (ProviderType.FILESYSTEM, {}, "memory://x", "unsupported store address"),
        (ProviderType.FILESYSTEM, {}, "sqlite:///tmp/one.db", "unsupported store address"),
    ],
)
def test_refused_choices(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    provider_type: ProviderType,
    config: dict[str, str],
    store: str | None,
    message: str,
) -> None:
    """A store motionfs cannot serve is a ValueError at construction, and no folder
    named after the address appears in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        ArtifactStorageManager(provider_type, config, store=store)
    assert list(tmp_path.iterdir()) == []
