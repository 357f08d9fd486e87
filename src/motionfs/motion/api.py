"""`ArtifactStorageManager`: the seed design's Python API on a motionfs store.

Same methods and models as chuk-motion's manager, on the same store and
metadata index as the mount. When a daemon serves the store (the drive is
mounted), every call is carried out by that daemon, so what the API creates
is in the mount at once and the reverse. When nothing serves it, the manager
starts the same engine in-process, without a mount, for as long as it is
initialized.

The seed's known bugs are fixed here: the provider type is honoured (the
store's own), BLOB metadata lives beside the data instead of being
overwritten by it, delete_checkpoint works, and list_projects filters by
scope and user as it says.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import trio
from chuk_virtual_fs import AsyncVirtualFileSystem

from motionfs import control
from motionfs.address import StoreAddress, check_meta
from motionfs.daemon import (
    INDEX_FILE,
    PG_INDEX_FILE,
    Daemon,
    MountOptions,
    lock_store,
    release_store,
    remove_memory_store,
)
from motionfs.errors import SetupError
from motionfs.meta import open_engine
from motionfs.motion.models import (
    AssetInfo,
    CheckpointInfo,
    ProjectInfo,
    ProjectMetadata,
    ProviderType,
    RenderInfo,
    StorageScope,
)


class _Engine:
    """The daemon's services without a mount, on a thread of their own."""

    def __init__(self, address: StoreAddress, user: str, meta_url: str | None) -> None:
        store = address.local
        store.mkdir(parents=True, exist_ok=True)
        self.lock_fd = lock_store(store)
        opts = MountOptions(
            mountpoint=store, **address.mount_fields(), meta_url=meta_url, user=user
        )
        self.daemon = Daemon(opts)
        self.daemon.prepare()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        ready = threading.Event()

        def started(stop: trio.Event) -> None:
            self._stop = stop
            self._token = trio.lowlevel.current_trio_token()
            ready.set()

        self.thread = threading.Thread(
            target=trio.run, args=(self.daemon.serve_headless, started), daemon=True
        )
        self.thread.start()
        ready.wait(timeout=60)

    def close(self) -> None:
        if self._stop is not None and self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self.thread.join(timeout=600)
        self.daemon.close(mounted=False)
        if self.daemon.opts.memory:
            remove_memory_store(self.daemon.opts.store)
        release_store(self.lock_fd)


class ArtifactStorageManager:
    """Projects (WORKSPACE), renders and assets (BLOB) and checkpoints on a motionfs store."""

    def __init__(
        self,
        provider_type: ProviderType = ProviderType.FILESYSTEM,
        provider_config: dict[str, Any] | None = None,
        *,
        store: str | Path | None = None,
        user_id: str | None = None,
        meta_url: str | None = None,
    ) -> None:
        config = dict(provider_config or {})
        meta_url = meta_url or config.pop("meta_url", None)
        try:
            self.address = StoreAddress.from_seed(provider_type, config, store)
            self.meta_url = check_meta(meta_url, self.address)
        except SetupError as e:
            raise ValueError(str(e)) from e
        self.provider_type = provider_type
        self.store = self.address.local  # the store, or an s3 store's index directory
        self.user_id = user_id or getpass.getuser()
        self._engine: _Engine | None = None
        self._initialized = False
        self._vfs: dict[str, AsyncVirtualFileSystem] = {}
        self._readers: list[Any] = []

    async def initialize(self) -> None:
        if self._initialized:
            return
        try:
            await self._call("list_projects", scope=None)
        except control.ControlError:
            self._engine = await asyncio.to_thread(
                _Engine, self.address, self.user_id, self.meta_url
            )
        self._initialized = True

    async def cleanup(self) -> None:
        for vfs in self._vfs.values():
            await vfs.close()
        self._vfs.clear()
        for storage in self._readers:
            await storage.stop()
        self._readers.clear()
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
            self._engine = None
        self._initialized = False

    async def __aenter__(self) -> ArtifactStorageManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cleanup()

    async def _call(self, method: str, **args: Any) -> Any:
        payload = {"op": f"api.{method}", "args": args}
        return await asyncio.to_thread(control.request, self.store, payload)

    def _scope(self, scope: StorageScope, user_id: str | None) -> str:
        if scope is StorageScope.USER and not (user_id or self.user_id):
            raise ValueError("user_id is required for USER scope")
        return scope.value

    # -- projects -----------------------------------------------------------------------

    async def create_project(
        self,
        project_name: str,
        theme: str,
        fps: int,
        width: int,
        height: int,
        scope: StorageScope = StorageScope.USER,
        user_id: str | None = None,
        ttl_hours: int | None = None,
    ) -> ProjectInfo:
        fields = {"theme": theme, "fps": fps, "width": width, "height": height}
        result = await self._call(
            "create_project",
            project_name=project_name,
            scope=self._scope(scope, user_id),
            fields=fields,
        )
        return ProjectInfo.model_validate(result)

    async def get_project(self, namespace_id: str) -> ProjectInfo:
        return ProjectInfo.model_validate(
            await self._call("get_project", namespace_id=namespace_id)
        )

    async def update_project_metadata(
        self, namespace_id: str, metadata: ProjectMetadata
    ) -> ProjectInfo:
        result = await self._call(
            "update_project", namespace_id=namespace_id, metadata=metadata.model_dump(mode="json")
        )
        return ProjectInfo.model_validate(result)

    async def get_project_vfs(self, namespace_id: str) -> AsyncVirtualFileSystem:
        """The namespace's chuk-virtual-fs VFS, for reading the project's files.

        Files written through it bypass motionfs's index: the mount does not
        show them. Write through the mount (or store renders/assets here).
        """
        if namespace_id not in self._vfs:
            from motionfs.store.s3 import S3Settings
            from motionfs.store.storage import Storage

            index = (
                open_engine(self.store / PG_INDEX_FILE, readonly=True, url=self.meta_url)
                if self.meta_url is not None
                else open_engine(self.store / INDEX_FILE, readonly=True)
            )
            try:
                record = index.namespace(namespace_id)
                s3_url, endpoint = index.get_meta("s3_url"), index.get_meta("s3_endpoint")
                db = index.get_meta("sqlite_db")
            finally:
                index.close()
            if record is None:
                raise ValueError(f"Namespace not found: {namespace_id}")
            # An s3 store: the address the mount recorded; credentials from the environment.
            s3 = S3Settings.parse(s3_url, endpoint_url=endpoint) if s3_url else None
            sqlite = Path(db) if db else None
            storage = Storage(self.store / "data", "api", s3=s3, sqlite=sqlite, exclusive=False)
            await storage.start()
            self._readers.append(storage)
            await storage.attach(record)
            self._vfs[namespace_id] = storage.user_vfs(namespace_id)
        return self._vfs[namespace_id]

    async def list_projects(
        self, scope: StorageScope | None = None, user_id: str | None = None
    ) -> list[ProjectInfo]:
        result = await self._call(
            "list_projects", scope=scope.value if scope else None, user_id=user_id
        )
        return [ProjectInfo.model_validate(p) for p in result]

    async def delete_project(self, namespace_id: str) -> None:
        await self._call("delete", namespace_id=namespace_id)

    # -- renders and assets --------------------------------------------------------------

    async def _with_upload(self, data: bytes, method: str, **args: Any) -> Any:
        tmp = self.store / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / f"api-{uuid.uuid4().hex}"
        await asyncio.to_thread(path.write_bytes, data)
        try:
            return await self._call(method, source=str(path), **args)
        finally:
            path.unlink(missing_ok=True)

    async def _download(self, namespace_id: str) -> bytes:
        fd, name = tempfile.mkstemp(
            dir=self.store / "tmp" if (self.store / "tmp").is_dir() else None
        )
        os.close(fd)
        try:
            await self._call("read_blob", namespace_id=namespace_id, dest=name)
            return await asyncio.to_thread(Path(name).read_bytes)
        finally:
            os.unlink(name)

    async def store_render(
        self,
        project_namespace_id: str,
        video_data: bytes,
        format: str,
        resolution: str,
        fps: int,
        duration_seconds: float,
        scope: StorageScope = StorageScope.USER,
        user_id: str | None = None,
        codec: str | None = None,
        bitrate_kbps: int | None = None,
    ) -> RenderInfo:
        fields = {
            "format": format,
            "resolution": resolution,
            "fps": fps,
            "duration_seconds": duration_seconds,
            "codec": codec,
            "bitrate_kbps": bitrate_kbps,
        }
        result = await self._with_upload(
            video_data,
            "store_render",
            project_namespace_id=project_namespace_id,
            scope=self._scope(scope, user_id),
            fields=fields,
        )
        return RenderInfo.model_validate(result)

    async def get_render(self, namespace_id: str) -> RenderInfo:
        return RenderInfo.model_validate(await self._call("get_blob", namespace_id=namespace_id))

    async def read_render_data(self, namespace_id: str) -> bytes:
        return await self._download(namespace_id)

    async def list_renders(
        self, project_namespace_id: str | None = None, scope: StorageScope | None = None
    ) -> list[RenderInfo]:
        """Renders the drive holds (made through the mount or this API), with their
        own namespace ids and `drive_path`; optionally one project's, one scope's."""
        result = await self._call(
            "list_blobs",
            kind="render",
            scope=scope.value if scope else None,
            filters={"project_namespace_id": project_namespace_id},
        )
        return [RenderInfo.model_validate(r) for r in result]

    async def store_asset(
        self,
        asset_data: bytes,
        asset_type: str,
        mime_type: str,
        tags: list[str] | None = None,
        project_namespace_ids: list[str] | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_seconds: float | None = None,
        scope: StorageScope = StorageScope.USER,
        user_id: str | None = None,
    ) -> AssetInfo:
        fields = {
            "asset_type": asset_type,
            "mime_type": mime_type,
            "tags": tags or [],
            "project_namespace_ids": project_namespace_ids or [],
            "width": width,
            "height": height,
            "duration_seconds": duration_seconds,
        }
        result = await self._with_upload(
            asset_data, "store_asset", scope=self._scope(scope, user_id), fields=fields
        )
        return AssetInfo.model_validate(result)

    async def get_asset(self, namespace_id: str) -> AssetInfo:
        return AssetInfo.model_validate(await self._call("get_blob", namespace_id=namespace_id))

    async def read_asset_data(self, namespace_id: str) -> bytes:
        return await self._download(namespace_id)

    async def list_assets(
        self,
        tags: list[str] | None = None,
        asset_type: str | None = None,
        scope: StorageScope | None = None,
    ) -> list[AssetInfo]:
        """Assets the drive holds, with their own namespace ids and `drive_path`;
        optionally those carrying every one of `tags`, of one type, in one scope."""
        result = await self._call(
            "list_blobs",
            kind="asset",
            scope=scope.value if scope else None,
            filters={"tags": tags, "asset_type": asset_type},
        )
        return [AssetInfo.model_validate(r) for r in result]

    # -- checkpoints --------------------------------------------------------------------

    async def create_checkpoint(
        self, namespace_id: str, name: str, description: str | None = None
    ) -> CheckpointInfo:
        result = await self._call(
            "create_checkpoint", namespace_id=namespace_id, name=name, description=description
        )
        return CheckpointInfo.model_validate(result)

    async def list_checkpoints(self, namespace_id: str) -> list[CheckpointInfo]:
        result = await self._call("list_checkpoints", namespace_id=namespace_id)
        return [CheckpointInfo.model_validate(c) for c in result]

    async def restore_checkpoint(self, namespace_id: str, checkpoint_id: str) -> None:
        await self._call(
            "restore_checkpoint", namespace_id=namespace_id, checkpoint_id=checkpoint_id
        )

    async def delete_checkpoint(self, namespace_id: str, checkpoint_id: str) -> None:
        await self._call(
            "delete_checkpoint", namespace_id=namespace_id, checkpoint_id=checkpoint_id
        )
