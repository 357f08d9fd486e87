"""Pins of the chuk-artifacts 0.11.x / chuk-virtual-fs 0.5.x behaviour motionfs relies on.

Each test pins one quirk (verified on chuk-artifacts 0.11.4, chuk-virtual-fs 0.5.3) and
says in its docstring what motionfs does about it. When an upgrade changes a behaviour the
test fails loudly: re-check the matching workaround in src/motionfs/store/, then update
the pin. No FUSE and no mount: these drive the libraries (and motionfs.store) directly,
with every provider root and database under tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from chuk_artifacts import ArtifactStore
from chuk_artifacts import NamespaceInfo as ChukNamespaceInfo
from chuk_artifacts import NamespaceType as ChukNamespaceType
from chuk_artifacts import StorageScope as ChukStorageScope
from chuk_virtual_fs import AsyncVirtualFileSystem
from chuk_virtual_fs.provider_base import AsyncStorageProvider
from chuk_virtual_fs.retry_handler import RetryError, RetryHandler

from motionfs.motion.models import NamespaceType, StorageScope
from motionfs.store.names import MAX_PLAIN_NAME, store_name
from motionfs.store.storage import Storage

SECONDS_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
STAMP_NS = 1_000_000_000_123_456_789  # 2001-09-09T01:46:40.123456789Z


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every library default path inside tmp_path and make retries instant."""
    monkeypatch.setenv("CHUK_VFS_TMP_ROOT", str(tmp_path / "vfs-tmp"))
    monkeypatch.setenv("ARTIFACT_FS_ROOT", str(tmp_path / "artifact-fs"))
    monkeypatch.setenv("ARTIFACT_SQLITE_PATH", str(tmp_path / "artifacts.db"))
    monkeypatch.setenv("ARTIFACT_SANDBOX_ID", "quirks")
    monkeypatch.delenv("ARTIFACT_PROVIDER", raising=False)
    monkeypatch.delenv("SESSION_PROVIDER", raising=False)
    # The VFS retries any provider exception 3 times with 1 s, 2 s, 4 s (+-50%) sleeps.
    monkeypatch.setattr(RetryHandler, "calculate_delay", lambda self, attempt: 0.0)


def new_store(storage_provider: str = "memory", sandbox_id: str | None = "quirks") -> ArtifactStore:
    return ArtifactStore(
        storage_provider=storage_provider, session_provider="memory", sandbox_id=sandbox_id
    )


async def fs_vfs(root: Path, **config: Any) -> AsyncVirtualFileSystem:
    vfs = AsyncVirtualFileSystem("filesystem", root_path=str(root), **config)
    await vfs.initialize()
    return vfs


async def sqlite_vfs(db: Path) -> AsyncVirtualFileSystem:
    vfs = AsyncVirtualFileSystem("sqlite", db_path=str(db))
    await vfs.initialize()
    return vfs


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def workspace(store: ArtifactStore, root: Path) -> str:
    info = await store.create_namespace(
        type=ChukNamespaceType.WORKSPACE,
        name="p",
        scope=ChukStorageScope.SANDBOX,
        provider_type="vfs-filesystem",
        provider_config={"root_path": str(root)},
    )
    return str(info.namespace_id)


async def started_storage(data_root: Path) -> Storage:
    storage = Storage(data_root, "sbx")
    await storage.start()
    return storage


# -- 1. provider selection ------------------------------------------------------------


def test_create_namespace_defaults_to_vfs_memory(tmp_path: Path) -> None:
    """Namespaces default to vfs-memory; Storage always passes provider_type/config.

    create_namespace without provider_type is vfs-memory whatever storage_provider says:
    Storage.create_namespace always passes provider_type and provider_config.
    """

    async def main() -> None:
        for provider in ("memory", "vfs-filesystem", "vfs-sqlite"):
            store = new_store(provider)
            info = await store.create_namespace(
                type=ChukNamespaceType.WORKSPACE, name="p", scope=ChukStorageScope.SANDBOX
            )
            vfs = store.get_namespace_vfs(info.namespace_id)
            assert info.provider_type == "vfs-memory", provider
            assert vfs.provider_name == "memory", provider
        assert not (tmp_path / "artifact-fs").exists()
        assert not (tmp_path / "artifacts.db").exists()

    asyncio.run(main())


def test_filesystem_namespace_lands_under_root_path(tmp_path: Path) -> None:
    """Filesystem namespaces live under root_path; Storage passes one in its store.

    provider_type="vfs-filesystem" + root_path puts the bytes under root_path (without
    root_path they go to $CHUK_VFS_TMP_ROOT/vfs-namespaces/<grid_path>): motionfs always
    passes a root_path inside its store directory.
    """

    async def main() -> None:
        store = new_store()
        root = tmp_path / "ns-root"
        ns = await workspace(store, root)
        assert await store.get_namespace_vfs(ns).write_file("/a.txt", b"hi")
        assert (root / "a.txt").read_bytes() == b"hi"
        assert (root / ".workspace" / "meta.json").read_bytes() == b"{}"

        info = await store.create_namespace(
            type=ChukNamespaceType.WORKSPACE,
            name="q",
            scope=ChukStorageScope.SANDBOX,
            provider_type="vfs-filesystem",
        )
        default_root = tmp_path / "vfs-tmp" / "vfs-namespaces" / info.grid_path
        assert (default_root / ".workspace" / "meta.json").is_file()

    asyncio.run(main())


# -- 2. the namespace registry is process memory ----------------------------------------


def test_registry_is_in_memory_and_reattach_by_insertion(tmp_path: Path) -> None:
    """Registry is per-process; re-register by inserting into _namespaces (attach).

    A second ArtifactStore does not know the first one's namespaces (ValueError), nor
    its checkpoints; inserting (initialized VFS, NamespaceInfo) into
    store._namespace._namespaces re-registers one: motionfs keeps the registry in its
    index and Storage.attach does exactly this insertion.
    """

    async def main() -> None:
        root = tmp_path / "ns-root"
        first = new_store()
        ns = await workspace(first, root)
        await first.write_namespace(ns, path="/a.txt", data=b"kept")
        await first.checkpoint_namespace(ns, name="v1")
        info_json = first.get_namespace_info(ns).model_dump_json()

        second = new_store()
        with pytest.raises(ValueError, match="Namespace not found"):
            second.get_namespace_vfs(ns)
        assert second.list_namespaces(include_all_scopes=True) == []

        vfs = AsyncVirtualFileSystem("filesystem", root_path=str(root))
        await vfs.initialize()
        info = ChukNamespaceInfo.model_validate_json(info_json)
        second._namespace._namespaces[ns] = (vfs, info)
        assert await second.read_namespace(ns, path="/a.txt") == b"kept"
        assert second.get_namespace_info(ns).grid_path == info.grid_path
        assert await second.list_checkpoints(ns) == []

    asyncio.run(main())


def test_sandbox_id_is_random_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sandbox id is random/HOSTNAME unless set; Storage passes an explicit one.

    Without sandbox_id / ARTIFACT_SANDBOX_ID / SANDBOX_ID / HOSTNAME every store gets a
    random sandbox-xxxxxxxx (HOSTNAME, e.g. a container id, is used too, sanitised): grid
    paths change per process, so Storage always passes an explicit sandbox_id.
    """
    for var in ("ARTIFACT_SANDBOX_ID", "SANDBOX_ID", "HOSTNAME"):
        monkeypatch.delenv(var, raising=False)
    a, b = new_store(sandbox_id=None), new_store(sandbox_id=None)
    assert re.fullmatch(r"sandbox-[0-9a-f]{8}", a.sandbox_id)
    assert a.sandbox_id != b.sandbox_id
    monkeypatch.setenv("HOSTNAME", "host.example")
    assert new_store(sandbox_id=None).sandbox_id == "hostexample"
    monkeypatch.setenv("ARTIFACT_SANDBOX_ID", "my box!")
    assert new_store(sandbox_id=None).sandbox_id == "mybox"
    assert new_store(sandbox_id="explicit").sandbox_id == "explicit"


def test_vfs_initialize_returns_none_and_hides_a_bad_root(tmp_path: Path) -> None:
    """VFS.initialize() returns None, even on failure; attach must not test it.

    AsyncVirtualFileSystem.initialize() returns None even when the provider failed, and a
    missing root_path is silently created (empty namespace): Storage.attach must not test
    initialize()'s return value and should check the provider/root itself.
    """

    async def main() -> None:
        missing = tmp_path / "gone"
        vfs = AsyncVirtualFileSystem("filesystem", root_path=str(missing))
        assert await vfs.initialize() is None
        assert missing.is_dir()  # create_root=True: an unmounted data disk looks empty

        not_a_dir = tmp_path / "file"
        not_a_dir.write_bytes(b"")
        bad = AsyncVirtualFileSystem("filesystem", root_path=str(not_a_dir))
        assert await bad.initialize() is None  # no exception either
        assert bad.provider is not None and await bad.provider.initialize() is False
        assert await bad.read_file("/x") is None
        assert await bad.ls("/") == []
        assert await bad.write_file("/x", b"1") is False

    asyncio.run(main())


def test_storage_attach_round_trips(tmp_path: Path) -> None:
    """Storage.attach re-registers a namespace in a fresh Storage; bytes read back.

    A namespace created by one Storage is attached by a second one over the same data_root
    and the bytes written by the first read back through the second. An attach that checks
    `not await vfs.initialize()` always refuses (initialize() returns None, see above).
    """

    async def main() -> None:
        data_root = tmp_path / "data"
        src, dest = tmp_path / "src", tmp_path / "dest"
        src.write_bytes(b"project bytes")
        first = await started_storage(data_root)
        rec = await first.create_namespace(NamespaceType.WORKSPACE, "p", StorageScope.USER, "alice")
        await first.put(rec.ns_id, "/src/Root.tsx", src, durable=True)
        await first.stop()

        second = await started_storage(data_root)
        assert not second.is_attached(rec.ns_id)
        await second.attach(rec)
        assert second.is_attached(rec.ns_id)
        assert await second.get(rec.ns_id, "/src/Root.tsx", dest)
        assert dest.read_bytes() == b"project bytes"
        await second.stop()

    asyncio.run(main())


# -- 3. checkpoints ---------------------------------------------------------------------


def test_checkpoints_overwrite_by_name_and_restore_keeps_new_files(tmp_path: Path) -> None:
    """Checkpoints: name reuse overwrites, restore keeps new files; index keeps them.

    checkpoint_id == name and reusing a name overwrites; restore rewrites checkpointed
    files but leaves files created afterwards and drops empty directories; unnamed ids
    have one-second resolution; ArtifactStore has no delete_checkpoint (only the private
    NamespaceOperations does): motionfs keeps checkpoint manifests in its own index.
    """

    async def main() -> None:
        store = new_store()
        ns = await workspace(store, tmp_path / "ns-root")
        vfs = store.get_namespace_vfs(ns)
        await vfs.write_file("/a.txt", b"v1")
        await vfs.mkdir("/empty")
        first = await store.checkpoint_namespace(ns, name="v1")
        assert first.checkpoint_id == "v1"

        await vfs.write_file("/a.txt", b"v2")
        again = await store.checkpoint_namespace(ns, name="v1")
        assert again.checkpoint_id == "v1"
        assert [c.checkpoint_id for c in await store.list_checkpoints(ns)] == ["v1"]

        await vfs.write_file("/a.txt", b"v3")
        await vfs.write_file("/later.txt", b"new")
        await vfs.rmdir("/empty")
        assert await store.restore_namespace(ns, "v1") is True
        assert await vfs.read_file("/a.txt") == b"v2"  # the second "v1" won
        assert await vfs.read_file("/later.txt") == b"new"
        assert not await vfs.exists("/empty")

        with pytest.raises(ValueError, match="Checkpoint not found"):
            await store.restore_namespace(ns, "nope")
        unnamed = await store.checkpoint_namespace(ns)
        assert re.fullmatch(r"snapshot_\d{8}_\d{6}", unnamed.checkpoint_id)

        assert not hasattr(store, "delete_checkpoint")
        assert hasattr(store._namespace, "delete_checkpoint")
        manager = store._namespace._snapshot_managers[ns]
        assert set(manager.snapshots) == {"v1", unnamed.checkpoint_id}  # in-process only

    asyncio.run(main())


# -- 4. BLOB namespaces -------------------------------------------------------------------


def test_blob_write_namespace_ignores_path(tmp_path: Path) -> None:
    """BLOB write_namespace ignores path (/_data); metadata goes through the VFS.

    For BLOB namespaces write_namespace/read_namespace ignore path and use /_data, so
    metadata "written" to /.chuk-motion/metadata.json replaces the blob: motionfs writes
    metadata files through the namespace VFS directly.
    """

    async def main() -> None:
        store = new_store()
        root = tmp_path / "blob"
        info = await store.create_namespace(
            type=ChukNamespaceType.BLOB,
            scope=ChukStorageScope.SANDBOX,
            provider_type="vfs-filesystem",
            provider_config={"root_path": str(root)},
        )
        ns = info.namespace_id
        vfs = store.get_namespace_vfs(ns)
        await store.write_namespace(ns, path="/x", data=b"payload")
        assert await vfs.read_file("/_data") == b"payload"
        assert not await vfs.exists("/x")

        await store.write_namespace(ns, path="/.chuk-motion/metadata.json", data=b"{}")
        assert await vfs.read_file("/_data") == b"{}"
        assert await store.read_namespace(ns, path="/anything") == b"{}"
        assert not (root / ".chuk-motion").exists()

    asyncio.run(main())


# -- 5. missing files and parents ----------------------------------------------------------


def test_missing_paths_are_none_or_false_not_exceptions(tmp_path: Path) -> None:
    """Missing paths give None/False, not errors; Storage checks and makes parents.

    Missing files read as None (b"" through read_namespace); write_file and stream_write
    into a missing parent return False, as does mkdir without parents, and
    write_namespace into a deep missing parent silently writes nothing: Storage checks
    existence explicitly, creates parents (mkdirs) and turns False into StoreUnavailable.
    """

    async def main() -> None:
        store = new_store()
        root = tmp_path / "ns-root"
        ns = await workspace(store, root)
        vfs = store.get_namespace_vfs(ns)
        assert await vfs.read_file("/missing") is None
        assert await store.read_namespace(ns, path="/missing") == b""
        assert [c async for c in vfs.stream_read("/missing")] == []
        assert await vfs.write_file("/nodir/x", b"1") is False
        assert await vfs.stream_write("/nodir/y", chunks(b"abc")) is False
        assert not (root / "nodir").exists()
        assert await vfs.mkdir("/a/b") is False
        assert await vfs.rm("/missing") is False

        assert await store.write_namespace(ns, path="/d1/d2/f.txt", data=b"lost") is None
        assert not await vfs.exists("/d1/d2/f.txt")

    asyncio.run(main())


def test_provider_exceptions_are_retried_then_raise(tmp_path: Path) -> None:
    """Provider exceptions retry 3x with sleeps, then RetryError; names stay short.

    Provider exceptions (unlike refusals) are retried 3 times with 1-4 s sleeps and then
    raise RetryError: a failing stream_write costs seconds and raises instead of returning
    False, so Storage keeps names short enough (store_name) never to reach this path.
    """

    async def main() -> None:
        vfs = await fs_vfs(tmp_path / "root")
        assert vfs.retry_handler is not None
        assert (vfs.retry_handler.max_retries, vfs.retry_handler.base_delay) == (3, 1.0)
        with pytest.raises(RetryError) as caught:
            await vfs.stream_write("/" + "n" * 242, chunks(b"x"))
        assert isinstance(caught.value.last_exception, OSError)
        assert vfs.retry_handler.stats["total_retries"] == 3

    asyncio.run(main())


# -- 6. filesystem provider -------------------------------------------------------------


def test_filesystem_hides_and_clobbers_meta_names(tmp_path: Path) -> None:
    """Filesystem hides and clobbers *.meta; store_name escapes them to *.meta~mfs.

    The filesystem provider keeps sidecars in <name>.meta: ls hides every *.meta name,
    writing x overwrites a user file x.meta with JSON and removing x deletes it: store_name
    escapes *.meta names to *.meta~mfs.
    """

    async def main() -> None:
        root = tmp_path / "root"
        vfs = await fs_vfs(root)
        assert await vfs.write_file("/x.meta", b"USER DATA")
        assert await vfs.ls("/") == []
        assert await vfs.exists("/x.meta")
        assert sorted(os.listdir(root)) == ["x.meta", "x.meta.meta"]

        assert await vfs.write_file("/x", b"data")
        clobbered = await vfs.read_file("/x.meta")
        assert clobbered is not None and clobbered.startswith(b'{"custom_meta"')
        assert await vfs.ls("/") == ["x"]

        assert await vfs.rm("/x")
        assert not await vfs.exists("/x.meta")

    asyncio.run(main())


def test_filesystem_mv_refuses_existing_target(tmp_path: Path) -> None:
    """Filesystem mv refuses an existing target; Storage.move removes it first.

    mv onto an existing target returns False and changes nothing: Storage.move removes
    the target first.
    """

    async def main() -> None:
        vfs = await fs_vfs(tmp_path / "root")
        await vfs.write_file("/a", b"a")
        await vfs.write_file("/b", b"b")
        assert await vfs.mv("/a", "/b") is False
        assert await vfs.read_file("/a") == b"a"
        assert await vfs.read_file("/b") == b"b"

    asyncio.run(main())


def test_filesystem_times_are_whole_seconds_and_touch_does_not_touch(tmp_path: Path) -> None:
    """Provider times are whole seconds, touch sets none; the index owns times.

    get_node_info/get_metadata report times as whole-second UTC strings (the sqlite
    provider: microsecond ISO) and touch of an existing file leaves its mtime alone, and
    nothing can set one: the metadata index owns nanosecond times.
    """

    async def main() -> None:
        root = tmp_path / "root"
        vfs = await fs_vfs(root)
        await vfs.write_file("/a", b"a")
        os.utime(root / "a", ns=(STAMP_NS, STAMP_NS))
        info = await vfs.get_node_info("/a")
        assert info is not None
        assert info.modified_at == "2001-09-09T01:46:40Z"
        meta = await vfs.get_metadata("/a")
        assert SECONDS_ISO.match(meta["modified_at"]) and SECONDS_ISO.match(meta["created_at"])
        assert await vfs.touch("/a") is True
        assert os.stat(root / "a").st_mtime_ns == STAMP_NS

        svfs = await sqlite_vfs(tmp_path / "ns.db")
        await svfs.write_file("/a", b"a")
        sinfo = await svfs.get_node_info("/a")
        assert sinfo is not None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", sinfo.modified_at)

    asyncio.run(main())


def test_filesystem_stream_write_name_limit_is_241_bytes(tmp_path: Path) -> None:
    """stream_write names max out at 241 bytes; store_name hashes longer ones.

    stream_write's temp file is .tmp_<8 random>_<name> (14 extra bytes): a 241-byte name
    works, 242 fails (RetryError, see above) and leaves an empty touched file behind:
    store_name hashes names over MAX_PLAIN_NAME = 241 bytes.
    """
    assert MAX_PLAIN_NAME == 241

    async def main() -> None:
        root = tmp_path / "root"
        vfs = await fs_vfs(root)
        ok = "n" * 241
        assert await vfs.stream_write("/" + ok, chunks(b"fits"))
        assert (root / ok).read_bytes() == b"fits"

        too_long = "m" * 242
        with pytest.raises(RetryError):
            await vfs.stream_write("/" + too_long, chunks(b"lost"))
        assert (root / too_long).read_bytes() == b""
        assert not [n for n in os.listdir(root) if n.startswith(".tmp_")]

    asyncio.run(main())


def test_filesystem_stream_write_is_atomic_replace(tmp_path: Path) -> None:
    """stream_write is an atomic replace, write_file is in place; commits use put.

    stream_write writes a temp file in the same directory and os.replace()s it (new
    inode, mode 0600 from mkstemp, no temp left); write_file truncates and rewrites in
    place (same inode), so readers can see torn data: motionfs commits with put
    (stream_write) and takes modes from its index, never from the provider.
    """

    async def main() -> None:
        root = tmp_path / "root"
        vfs = await fs_vfs(root)
        assert await vfs.stream_write("/f", chunks(b"one", b"two"))
        first = os.stat(root / "f")
        assert await vfs.stream_write("/f", chunks(b"three"))
        second = os.stat(root / "f")
        assert (root / "f").read_bytes() == b"three"
        assert second.st_ino != first.st_ino
        assert second.st_mode & 0o777 == 0o600
        assert sorted(os.listdir(root)) == ["f", "f.meta"]

        assert await vfs.write_file("/g", b"one")
        before = os.stat(root / "g").st_ino
        assert await vfs.write_file("/g", b"two")
        assert os.stat(root / "g").st_ino == before

    asyncio.run(main())


def test_filesystem_stream_read_reads_the_whole_file(tmp_path: Path) -> None:
    """Filesystem stream_read reads the whole file into memory (so Storage.get does).

    The filesystem provider does not override stream_read: the base class reads the
    whole file with read_file and then slices it, so Storage.get holds a whole file in
    memory (only the s3 provider streams).
    """

    async def main() -> None:
        vfs = await fs_vfs(tmp_path / "root")
        provider = vfs.provider
        assert provider is not None
        assert type(provider).stream_read is AsyncStorageProvider.stream_read
        await vfs.write_file("/f", b"0123456789")
        reads: list[int] = []
        original = provider.read_file

        async def counting_read(path: str) -> bytes | None:
            data = await original(path)
            reads.append(len(data or b""))
            return data

        provider.read_file = counting_read  # type: ignore[method-assign]
        parts = [c async for c in vfs.stream_read("/f", chunk_size=4)]
        assert parts == [b"0123", b"4567", b"89"]
        assert reads == [10]

    asyncio.run(main())


# -- 7. motionfs.store.names.store_name----------------------------------------------------


def test_store_name_escapes() -> None:
    """store_name escapes *.meta, *~mfs and root library names; hashes the rest.

    store_name keeps plain names, appends ~mfs to *.meta, *~mfs and (at the root only)
    library names, and turns non-UTF-8 or over-241-byte names into a stable digest.
    """
    assert store_name(b"Root.tsx") == "Root.tsx"
    assert store_name(b"a.meta") == "a.meta~mfs"
    assert store_name(b"a~mfs") == "a~mfs~mfs"
    assert store_name(b"a.meta~mfs") == "a.meta~mfs~mfs"
    for reserved in (b".workspace", b".chuk-motion", b"_meta.json", b"_data"):
        assert store_name(reserved, at_root=True) == reserved.decode() + "~mfs"
        assert store_name(reserved) == reserved.decode()
    assert store_name(b"n" * 241) == "n" * 241
    assert store_name("é".encode() * 120) == "é" * 120  # 240 bytes
    hashed = [
        b"\xff\xfe.bin",
        b"n" * 242,
        "é".encode() * 121,
        b"x" * 237 + b".meta",  # 241 bytes, 245 once escaped
        b"~mfs-looks-hashed",
    ]
    for name in hashed:
        digest = store_name(name)
        assert re.fullmatch(r"~mfs-[a-z2-7]{40}", digest), name
        assert store_name(name) == digest
    assert len({store_name(name) for name in hashed}) == len(hashed)


def test_store_names_round_trip_through_storage(tmp_path: Path) -> None:
    """Every escaped name round-trips through Storage.put/get on the filesystem.

    Every escaped name survives Storage.put/get on the filesystem provider, beside the
    names it protects (a and a.meta), visible in ls, with no temp file left behind.
    """
    root_names = [b".workspace", b".chuk-motion", b"_meta.json", b"_data"]
    names = [
        b"a",
        b"a.meta",
        b"a~mfs",
        b"Root.tsx",
        b"\xff\xfe.bin",
        b"n" * 241,
        b"n" * 242,
        b"x" * 255,
        "é".encode() * 121,
        b"x" * 237 + b".meta",
    ]

    async def main() -> None:
        storage = await started_storage(tmp_path / "data")
        rec = await storage.create_namespace(
            NamespaceType.WORKSPACE, "p", StorageScope.USER, "alice"
        )
        vfs = storage.vfs(rec.ns_id)
        cases = [("/" + store_name(n, at_root=True), n) for n in root_names]
        cases += [("/dir/" + store_name(n), n) for n in names]
        for i, (path, name) in enumerate(cases):
            src = tmp_path / f"src{i}"
            src.write_bytes(b"content of " + name)
            await storage.put(rec.ns_id, path, src)
        for i, (path, name) in enumerate(cases):
            dest = tmp_path / f"dest{i}"
            assert await storage.get(rec.ns_id, path, dest), path
            assert dest.read_bytes() == b"content of " + name, path
        listed = set(await vfs.ls("/dir"))
        assert listed == {p.rsplit("/", 1)[1] for p, _ in cases if p.startswith("/dir/")}
        root_listing = set(await vfs.ls("/"))
        assert {".workspace", "dir"} | {p[1:] for p, _ in cases[:4]} == root_listing
        assert await vfs.read_file("/.workspace/meta.json") == b"{}"
        on_disk = os.listdir(Path(rec.provider_config["root_path"]) / "dir")
        assert not [n for n in on_disk if n.startswith(".tmp_")]
        await storage.stop()

    asyncio.run(main())


def test_storage_move_replaces_and_is_idempotent(tmp_path: Path) -> None:
    """Storage.move replaces and re-runs as a no-op; remove of a missing path is ok.

    Storage.move replaces an existing target (the provider refuses), re-running a
    completed move is a no-op, and Storage.remove of a missing path is fine.
    """

    async def main() -> None:
        storage = await started_storage(tmp_path / "data")
        rec = await storage.create_namespace(
            NamespaceType.WORKSPACE, "p", StorageScope.USER, "alice"
        )
        ns = rec.ns_id
        src = tmp_path / "src"
        src.write_bytes(b"new")
        await storage.put(ns, "/d/a", src)
        src.write_bytes(b"old")
        await storage.put(ns, "/e/b", src)

        await storage.move(ns, "/d/a", "/e/b")
        assert not await storage.exists(ns, "/d/a")
        assert await storage.read_small(ns, "/e/b") == b"new"
        await storage.move(ns, "/d/a", "/e/b")
        assert await storage.read_small(ns, "/e/b") == b"new"

        await storage.move(ns, "/e/b", "/f/g/c")  # creates the target's parents
        assert await storage.read_small(ns, "/f/g/c") == b"new"

        await storage.remove(ns, "/missing")
        await storage.remove(ns, "/missing/deeper")
        await storage.remove(ns, "/f")
        assert not await storage.exists(ns, "/f")
        await storage.stop()

    asyncio.run(main())


# -- 8. sqlite provider ---------------------------------------------------------------------


def test_sqlite_listing_uses_unescaped_case_insensitive_like(tmp_path: Path) -> None:
    """sqlite listings use unescaped case-insensitive LIKE; list from the index.

    sqlite listings use `path LIKE '<dir>/%'` unescaped: ls /a_b also shows the children
    of /aXb and /A_B, ls /p% shows /pz's, and rmdir of an empty /a_b is refused: motionfs
    lists from its own index and must not use the sqlite provider's listing for names
    with _ or %.
    """

    async def main() -> None:
        vfs = await sqlite_vfs(tmp_path / "ns.db")
        for d in ("/a_b", "/aXb", "/A_B", "/p%", "/pz"):
            assert await vfs.mkdir(d)
        await vfs.write_file("/aXb/child", b"1")
        await vfs.write_file("/A_B/upper", b"1")
        await vfs.write_file("/pz/in_pz", b"1")
        assert await vfs.ls("/a_b") == ["child", "upper"]
        assert await vfs.ls("/aXb") == ["child"]
        assert await vfs.ls("/p%") == ["in_pz"]
        assert await vfs.rmdir("/a_b") is False

    asyncio.run(main())


def test_sqlite_one_blob_per_file(tmp_path: Path) -> None:
    """sqlite keeps one in-memory-built BLOB per file; big files do not belong there.

    The sqlite provider stores each file as one BLOB row (stream_write buffers every
    chunk in memory first), so a file must fit in memory and in SQLite's 1e9-byte limit.
    """

    async def main() -> None:
        db = tmp_path / "ns.db"
        vfs = await sqlite_vfs(db)
        assert await vfs.stream_write("/big", chunks(b"a" * 100, b"b" * 100, b"c" * 100))
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "SELECT path, length(content) FROM file_content WHERE path LIKE '/big%'"
            ).fetchall()
        assert rows == [("/big", 300)]

    asyncio.run(main())


def test_sqlite_stream_write_uses_a_visible_tmp_sibling(tmp_path: Path) -> None:
    """sqlite stream_write clobbers <name>.tmp and fails on empty streams.

    The sqlite (and memory) provider's stream_write goes through a sibling node
    <name>.tmp: writing f destroys a user file f.tmp, and an empty stream returns False and
    leaves e and e.tmp behind: Storage only uses stream_write on the filesystem provider
    as is; on sqlite it would need names ending in .tmp escaped and empty files special-cased.
    """

    async def main() -> None:
        vfs = await sqlite_vfs(tmp_path / "ns.db")
        await vfs.write_file("/f.tmp", b"USER DATA")
        assert await vfs.stream_write("/f", chunks(b"new"))
        assert await vfs.read_file("/f") == b"new"
        assert not await vfs.exists("/f.tmp")

        assert await vfs.stream_write("/e", chunks()) is False
        assert await vfs.read_file("/e") == b""
        assert await vfs.exists("/e.tmp")

    asyncio.run(main())


# -- 9. concurrent first writes ---------------------------------------------------------------


def test_concurrent_first_writes_to_one_path_fail(tmp_path: Path) -> None:
    """Concurrent first writes to one path fail (19 of 20); commits are serialised.

    write_file of a new path is check-then-create (exists, exists, create_node): when 20
    writers all pass the checks before any creates, exactly one succeeds and 19 return
    False. The interleaving is forced (barrier + one worker thread) to be deterministic;
    with the default thread pool 12-19 of 20 failed in 200 trials. motionfs serialises
    commits per path and never relies on concurrent first writes.
    """

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        root = tmp_path / "root"
        vfs = await fs_vfs(root)
        provider = vfs.provider
        assert provider is not None
        writers = 20
        barrier = asyncio.Barrier(writers)
        create = provider.create_node

        async def create_after_everyone_checked(node_info: Any) -> bool:
            await barrier.wait()
            return bool(await create(node_info))

        provider.create_node = create_after_everyone_checked  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(vfs.write_file("/same", b"writer %d" % i) for i in range(writers))
        )
        assert results.count(False) == writers - 1
        winner = results.index(True)
        assert (root / "same").read_bytes() == b"writer %d" % winner

    asyncio.run(main())


# --------------------------------------------------------------------------- s3 provider


async def _stock_s3(server: Any, prefix: str) -> AsyncVirtualFileSystem:
    vfs = AsyncVirtualFileSystem(
        "s3", bucket_name=server.bucket, prefix=prefix, endpoint_url=server.endpoint
    )
    await vfs.initialize()
    return vfs


def test_s3_provider_quirks(s3_server: Any) -> None:
    """The stock s3 provider: without a prefix per namespace every namespace writes the same
    keys; an empty file cannot be stream-written (S3 refuses a multipart upload without
    parts); `read_file` reads the whole object into memory. motionfs gives each namespace
    `PREFIX/ns/<token>` and moves bytes with its own calls on the shared client
    (SharedClientS3Provider)."""

    async def body() -> None:
        a = await _stock_s3(s3_server, "")
        b = await _stock_s3(s3_server, "")
        assert await a.write_file("/shared.txt", b"from a")
        assert await b.read_file("/shared.txt") == b"from a"  # no isolation

        async def nothing() -> AsyncIterator[bytes]:
            return
            yield b""

        assert await a.stream_write("/empty", nothing()) is False

    asyncio.run(body())


def test_s3_provider_reports_an_outage_as_missing(tmp_path: Path) -> None:
    """The stock s3 provider turns a failing endpoint into False/None, like a missing file
    ("a backend outage looks the same" as a missing file). motionfs's strict calls raise instead,
    so the storage layer reports StoreUnavailable (EIO), never "not found"."""
    from motionfs.errors import StoreUnavailable
    from motionfs.store.s3 import S3Settings
    from s3server import S3Server

    with S3Server() as server:

        async def body() -> None:
            vfs = await _stock_s3(server, "q")
            assert await vfs.write_file("/f", b"x")
            storage = Storage(
                tmp_path / "data",
                "quirks",
                s3=S3Settings(
                    bucket=server.bucket,
                    prefix="m",
                    endpoint_url=server.endpoint,
                    connect_timeout=1,
                    read_timeout=2,
                    max_attempts=1,
                ),
            )
            await storage.start()
            try:
                rec = await storage.create_namespace(
                    NamespaceType.WORKSPACE, "p", StorageScope.SANDBOX, None
                )
                await storage.write_small(rec.ns_id, "/f", b"y")
                server.stop()
                assert await vfs.exists("/f") is False
                assert await vfs.read_file("/f") is None
                with pytest.raises(StoreUnavailable):
                    await storage.exists(rec.ns_id, "/f")
                with pytest.raises(StoreUnavailable):
                    await storage.read_small(rec.ns_id, "/f")
                server.start()
                assert await storage.read_small(rec.ns_id, "/f") == b"y"
            finally:
                await storage.stop()

        asyncio.run(body())


def test_memory_provider_mv_of_a_folder_keeps_both_and_reports_failure() -> None:
    """The memory provider's mv of a non-empty folder copies it, then fails to
    delete the source and returns False: VfsBackend.move moves folders entry by
    entry (and a file's mv works)."""

    async def main() -> None:
        vfs = AsyncVirtualFileSystem("memory")
        await vfs.initialize()
        assert await vfs.mkdir("/a")
        assert await vfs.write_file("/a/x", b"hello")
        assert await vfs.mv("/a", "/b") is False
        assert await vfs.exists("/a") and await vfs.ls("/b") == ["x"]
        assert await vfs.mv("/b/x", "/b/y") is True
        assert await vfs.ls("/b") == ["y"]
        other = AsyncVirtualFileSystem("memory")  # each instance is its own RAM
        await other.initialize()
        assert await other.ls("/") == []

    asyncio.run(main())
