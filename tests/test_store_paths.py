"""Store operations on any path the mount accepts, and after a crash anywhere.

A mount path of 25 folders with 200-byte names is legal (every name fits in
255 bytes) but its host path is longer than PATH_MAX: the local store works
on it by file descriptor. Writes go through temp files and renames, leftovers
are swept, a 0-byte leftover of a content-addressed object is copied again,
and failures that retrying cannot fix are told from those it can. The test
S3 server refuses over-long keys as real S3 does.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from motionfs.errors import FsError, StoreUnavailable
from motionfs.motion.models import NamespaceType, StorageScope
from motionfs.store.backend import CHUNK
from motionfs.store.failures import is_permanent
from motionfs.store.host import HostTree
from motionfs.store.hostfs import temp_name
from motionfs.store.names import store_name
from motionfs.store.s3 import S3Settings
from motionfs.store.storage import Storage
from s3server import AWS_ENV, S3Server

DEEP_NAMES = [f"{i:02d}" + "d" * 198 for i in range(25)]  # 200 bytes each
DEEP_DIR = "/" + "/".join(DEEP_NAMES)
DEEP_FILE = DEEP_DIR + "/" + "f" * 200
PATH_MAX = 4096


def host_tree(tmp_path: Path) -> HostTree:
    root = tmp_path / "ns"
    root.mkdir()
    return HostTree(root)


def source_file(tmp_path: Path, data: bytes, name: str = "source") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_deep_path_is_beyond_path_max(tmp_path: Path) -> None:
    """The premise: each name is legal, the whole host path is not."""
    host = host_tree(tmp_path)
    assert all(len(n.encode()) <= 255 for n in DEEP_NAMES)
    assert len(os.fsencode(str(host.host(DEEP_FILE)))) > PATH_MAX
    with pytest.raises(OSError) as err:
        os.makedirs(host.host(DEEP_DIR))
    assert err.value.errno == errno.ENAMETOOLONG


def test_host_tree_works_beyond_path_max(tmp_path: Path) -> None:
    host = host_tree(tmp_path)
    data = os.urandom(300_000)
    host.mkdirs(DEEP_DIR)
    assert host.exists(DEEP_DIR)
    assert not host.exists(DEEP_FILE)
    assert host.read_small(DEEP_FILE) is None
    assert not host.get(DEEP_FILE, tmp_path / "missing")

    # put: from a file by hard link, from a stream by copy; durable too.
    with open(source_file(tmp_path, data), "rb") as f:
        host.put(DEEP_FILE, f, durable=True)
    assert host.read_small(DEEP_FILE) == data
    host.put(DEEP_FILE + "2", io.BytesIO(b"streamed"))
    assert host.read_small(DEEP_FILE + "2") == b"streamed"

    # get: into a short local path.
    dest = tmp_path / "got"
    assert host.get(DEEP_FILE, dest)
    assert dest.read_bytes() == data

    # copy and write_small replace atomically.
    assert host.copy(DEEP_FILE, DEEP_DIR + "/sub/copy")
    assert host.read_small(DEEP_DIR + "/sub/copy") == data
    assert not host.copy(DEEP_DIR + "/nothing", DEEP_DIR + "/sub/none")
    assert not host.exists(DEEP_DIR + "/sub/none")
    host.write_small(DEEP_DIR + "/small", b"one")
    host.write_small(DEEP_DIR + "/small", b"two")
    assert host.read_small(DEEP_DIR + "/small") == b"two"

    # move: replaces the target, carries the provider's sidecar.
    host.write_small(DEEP_FILE + ".meta", b'{"sidecar": 1}')
    host.move(DEEP_FILE, DEEP_DIR + "/sub/copy")
    assert not host.exists(DEEP_FILE) and not host.exists(DEEP_FILE + ".meta")
    assert host.read_small(DEEP_DIR + "/sub/copy") == data
    assert host.read_small(DEEP_DIR + "/sub/copy.meta") == b'{"sidecar": 1}'
    host.move(DEEP_FILE, DEEP_DIR + "/sub/copy")  # re-run after the move: nothing to do
    assert host.read_small(DEEP_DIR + "/sub/copy") == data
    # A directory moves too, over an existing one.
    host.move(DEEP_DIR + "/sub", DEEP_DIR + "/moved")
    assert host.read_small(DEEP_DIR + "/moved/copy") == data
    assert not host.exists(DEEP_DIR + "/sub")

    # No temp file is left by any of it.
    assert host.sweep_temps() == 0

    # remove: a file with its sidecar, then the whole tree.
    host.remove(DEEP_DIR + "/moved/copy")
    assert not host.exists(DEEP_DIR + "/moved/copy")
    assert not host.exists(DEEP_DIR + "/moved/copy.meta")
    host.remove(DEEP_DIR + "/moved/copy")  # missing is fine
    host.remove("/" + DEEP_NAMES[0])
    assert os.listdir(host.root) == []


def test_move_edge_cases(tmp_path: Path) -> None:
    """Two names of one file (the cache file linked twice), a file over a
    directory, and a sidecar a crash left behind after the rename."""
    host = host_tree(tmp_path)
    with open(source_file(tmp_path, b"shared"), "rb") as f:
        host.put("/a", f)
        host.put("/b", f)
    assert os.path.samefile(host.host("/a"), host.host("/b"))
    host.move("/a", "/b")
    assert not host.exists("/a")
    assert host.read_small("/b") == b"shared"

    host.write_small("/dir/inner", b"x")
    host.move("/b", "/dir")
    assert host.read_small("/dir") == b"shared"

    host.write_small("/new", b"n")
    host.write_small("/old.meta", b"sidecar")
    host.move("/old", "/new")  # the rename happened, the sidecar did not
    assert host.read_small("/new.meta") == b"sidecar"
    assert not host.exists("/old.meta")
    assert sorted(os.listdir(host.root)) == ["dir", "new", "new.meta"]


def test_storage_works_beyond_path_max_on_a_local_store(tmp_path: Path) -> None:
    """Every Storage call on a filesystem namespace goes by file descriptor."""
    data = os.urandom(200_000)

    async def body(storage: Storage, ns: str) -> None:
        host = storage.direct(ns)
        assert host is not None
        library_files = sorted(os.listdir(host.root))  # the library's own (.workspace)
        await storage.mkdirs(ns, DEEP_DIR)
        assert await storage.exists(ns, DEEP_DIR)
        sha = await storage.put(ns, DEEP_FILE, source_file(tmp_path, data), durable=True)
        assert sha == hashlib.sha256(data).hexdigest()
        assert await storage.exists(ns, DEEP_FILE)
        dest = tmp_path / "got"
        assert await storage.get(ns, DEEP_FILE, dest)
        assert dest.read_bytes() == data
        assert await storage.read_small(ns, DEEP_FILE) == data
        await storage.write_small(ns, DEEP_DIR + "/m.json", b"{}")
        assert await storage.read_small(ns, DEEP_DIR + "/m.json") == b"{}"
        assert await storage.copy(ns, DEEP_FILE, DEEP_DIR + "/c")
        assert await storage.read_small(ns, DEEP_DIR + "/c") == data
        await storage.move(ns, DEEP_DIR + "/c", DEEP_DIR + "/d/e")
        assert not await storage.exists(ns, DEEP_DIR + "/c")
        assert await storage.read_small(ns, DEEP_DIR + "/d/e") == data
        assert storage.sweep_temps(ns) == 0
        await storage.remove(ns, "/" + DEEP_NAMES[0])
        assert not await storage.exists(ns, DEEP_FILE)
        assert sorted(os.listdir(host.root)) == library_files

    with_storage(tmp_path, body)


def test_copy_if_missing_recopies_a_leftover_of_another_size(tmp_path: Path) -> None:
    """A 0-byte object left by an interrupted write is not "already there"."""

    async def body(storage: Storage, ns: str) -> None:
        await storage.write_small(ns, "/src", b"content")
        await storage.write_small(ns, "/objects/empty-leftover", b"")
        assert await storage.copy(ns, "/src", "/objects/empty-leftover", if_missing=True)
        assert await storage.read_small(ns, "/objects/empty-leftover") == b"content"
        # Same size: content-addressed, kept as it is (not copied again).
        await storage.write_small(ns, "/objects/same-size", b"CONTENT")
        assert await storage.copy(ns, "/src", "/objects/same-size", if_missing=True)
        assert await storage.read_small(ns, "/objects/same-size") == b"CONTENT"
        # Without if_missing the target is always replaced.
        assert await storage.copy(ns, "/src", "/objects/same-size")
        assert await storage.read_small(ns, "/objects/same-size") == b"content"
        # A missing source: an existing object is kept, none is made up.
        assert await storage.copy(ns, "/gone", "/objects/same-size", if_missing=True)
        assert not await storage.copy(ns, "/gone", "/objects/other", if_missing=True)
        assert not await storage.exists(ns, "/objects/other")

    with_storage(tmp_path, body)


def test_a_local_copy_is_a_link_and_falls_back_to_copying_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store files are never written in place, so a copy shares the file; when
    a link cannot be made (another disk, the link limit) the bytes are copied,
    and replacing the source afterwards leaves the copy as it was."""
    tree = host_tree(tmp_path)
    tree.write_small("/src", b"content")
    assert tree.copy("/src", "/objects/a")
    assert os.stat(tree.root / "objects" / "a").st_ino == os.stat(tree.root / "src").st_ino
    assert tree.copy("/src", "/objects/a")  # already that file: nothing to do, no temp left
    assert sorted(os.listdir(tree.root / "objects")) == ["a"]

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", no_links)
    assert tree.share("/src", "/objects/b") is None
    assert not (tree.root / "objects" / "b").exists()
    assert tree.copy("/src", "/objects/b")
    assert (tree.root / "objects" / "b").read_bytes() == b"content"
    assert os.stat(tree.root / "objects" / "b").st_ino != os.stat(tree.root / "src").st_ino
    monkeypatch.undo()

    tree.write_small("/src", b"new content")  # a new file at the name, as every write
    assert (tree.root / "objects" / "a").read_bytes() == b"content"
    assert (tree.root / "objects" / "b").read_bytes() == b"content"
    assert sorted(os.listdir(tree.root / "objects")) == ["a", "b"]


def test_copy_if_missing_recopies_a_leftover_on_s3(tmp_path: Path, s3_server: S3Server) -> None:
    async def body(storage: Storage, ns: str) -> None:
        await storage.write_small(ns, "/src", b"content")
        await storage.write_small(ns, "/objects/empty-leftover", b"")
        assert await storage.copy(ns, "/src", "/objects/empty-leftover", if_missing=True)
        assert await storage.read_small(ns, "/objects/empty-leftover") == b"content"
        await storage.write_small(ns, "/objects/same-size", b"CONTENT")
        assert await storage.copy(ns, "/src", "/objects/same-size", if_missing=True)
        assert await storage.read_small(ns, "/objects/same-size") == b"CONTENT"
        assert not await storage.copy(ns, "/gone", "/objects/other", if_missing=True)

    with_storage(tmp_path, body, s3_server)


def test_a_failed_put_keeps_the_old_content_and_leaves_no_temp(tmp_path: Path) -> None:
    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise OSError(errno.EIO, "the source broke")
            return super().read(10)

    host = host_tree(tmp_path)
    host.write_small("/d/f", b"old content")
    with pytest.raises(OSError):
        host.put("/d/f", Failing(b"new content, longer than ten bytes"))
    assert host.read_small("/d/f") == b"old content"
    assert sorted(os.listdir(host.root / "d")) == ["f"]


def test_a_put_killed_midway_leaves_the_old_content_and_a_temp_that_is_swept(
    tmp_path: Path,
) -> None:
    """SIGKILL while the new content streams in: the name keeps the old bytes."""
    host = host_tree(tmp_path)
    host.write_small("/d/f", b"old content")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from motionfs.store.host import HostTree\n"
        "HostTree(Path(sys.argv[1])).put('/d/f', sys.stdin.buffer)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(host.root)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"x" * (CHUNK + 100_000))  # one chunk is written, then it waits
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not any(
            n.startswith(".tmp_") and (host.root / "d" / n).stat().st_size > 0
            for n in os.listdir(host.root / "d")
        ):
            assert time.monotonic() < deadline, "the put never started writing"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
    assert host.read_small("/d/f") == b"old content"
    temps = [n for n in os.listdir(host.root / "d") if n.startswith(".tmp_")]
    assert len(temps) == 1 and temps[0].endswith("_f")
    assert host.sweep_temps() == 1
    assert os.listdir(host.root / "d") == ["f"]


def test_sweep_removes_stale_temps_and_nothing_else(tmp_path: Path) -> None:
    async def body(storage: Storage, ns: str) -> None:
        host = storage.direct(ns)
        assert host is not None
        # Stale temps: ours (with and without the name) and the provider's
        # stream_write's (tempfile.mkstemp's random part has underscores).
        await storage.write_small(ns, "/a/.tmp_0123abcd_clip.mp4", b"partial")
        await storage.write_small(ns, DEEP_DIR + "/.tmp_deadbeef", b"")
        await storage.write_small(ns, "/a/b/.tmp_x_y9k2_q_Root.tsx", b"partial")
        # Not temps: a user's file, a directory, and the real file.
        await storage.write_small(ns, "/a/.tmp_notes", b"mine")
        await storage.mkdirs(ns, "/a/.tmp_abcdefgh_dir")
        await storage.write_small(ns, "/a/clip.mp4", b"whole")
        assert storage.sweep_temps(ns) == 3
        assert storage.sweep_temps(ns) == 0
        assert not await storage.exists(ns, "/a/.tmp_0123abcd_clip.mp4")
        assert not await storage.exists(ns, DEEP_DIR + "/.tmp_deadbeef")
        assert not await storage.exists(ns, "/a/b/.tmp_x_y9k2_q_Root.tsx")
        assert await storage.read_small(ns, "/a/.tmp_notes") == b"mine"
        assert await storage.exists(ns, "/a/.tmp_abcdefgh_dir")
        assert await storage.read_small(ns, "/a/clip.mp4") == b"whole"
        assert sorted(os.listdir(host.root / "a" / "b")) == []

        # The store's own temp directory (copy through a local file).
        assert storage.sweep_store_tmp() == 0
        tmp = storage.data_root / "tmp"
        tmp.mkdir(exist_ok=True)
        (tmp / "tmpab12cd34").write_bytes(b"left by a crash")
        (tmp / "dir").mkdir()
        (tmp / "dir" / "x").write_bytes(b"")
        assert storage.sweep_store_tmp() == 2
        assert os.listdir(tmp) == []

    with_storage(tmp_path, body)


def test_temp_names_fit_in_a_name(tmp_path: Path) -> None:
    """`.tmp_<hex>_<name>` when it fits in 255 bytes, else `.tmp_<hex>`."""
    assert temp_name("clip.mp4").startswith(".tmp_")
    assert temp_name("clip.mp4").endswith("_clip.mp4")
    assert len(temp_name("z" * 241).encode()) == 255
    short = temp_name("z" * 250)
    assert len(short) == len(".tmp_") + 8 and "z" not in short
    # Names up to 255 bytes can be written, copied and moved.
    host = host_tree(tmp_path)
    name = "/" + "z" * 255
    host.put(name, io.BytesIO(b"long name"))
    host.write_small("/w" + "z" * 254, b"small")
    assert host.copy(name, "/c" + "z" * 254)
    host.move("/c" + "z" * 254, "/m" + "z" * 254)
    assert host.read_small(name) == b"long name"
    assert host.read_small("/w" + "z" * 254) == b"small"
    assert host.read_small("/m" + "z" * 254) == b"long name"
    assert sorted(os.listdir(host.root)) == sorted(["z" * 255, "w" + "z" * 254, "m" + "z" * 254])


def test_a_name_longer_than_the_disk_allows_is_a_permanent_failure(tmp_path: Path) -> None:
    async def body(storage: Storage, ns: str) -> None:
        with pytest.raises(StoreUnavailable) as err:
            await storage.write_small(ns, "/" + "n" * 256, b"x")
        assert is_permanent(err.value)
        with pytest.raises(OSError) as raw:
            storage.direct(ns).put("/" + "n" * 256, io.BytesIO(b"x"))  # type: ignore[union-attr]
        assert raw.value.errno == errno.ENAMETOOLONG
        assert is_permanent(raw.value)

    with_storage(tmp_path, body)


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def wrapped(error: BaseException) -> StoreUnavailable:
    """As `store_errors` wraps a backend failure."""
    try:
        raise StoreUnavailable(f"{type(error).__name__}: {error}") from error
    except StoreUnavailable as e:
        return e


def test_is_permanent_tells_permanent_failures_from_transient_ones() -> None:
    for err in (errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.ELOOP):
        assert is_permanent(OSError(err, os.strerror(err)))
        assert is_permanent(wrapped(OSError(err, os.strerror(err))))
    for err in (errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EEXIST, errno.ECONNREFUSED):
        assert not is_permanent(OSError(err, os.strerror(err)))
        assert not is_permanent(wrapped(OSError(err, os.strerror(err))))
    for code in ("KeyTooLongError", "InvalidArgument", "EntityTooLarge", "InvalidObjectName"):
        assert is_permanent(client_error(code, 400))
        assert is_permanent(wrapped(client_error(code, 400)))
    for code, status in (("SlowDown", 503), ("InternalError", 500), ("503", 503)):
        assert not is_permanent(client_error(code, status))
        assert not is_permanent(wrapped(client_error(code, status)))
    assert not is_permanent(wrapped(EndpointConnectionError(endpoint_url="http://x")))
    assert not is_permanent(TimeoutError())
    assert not is_permanent(StoreUnavailable("the s3 connection is not open"))
    assert is_permanent(FsError(errno.ENAMETOOLONG, "too long"))


def test_is_permanent_looks_through_implicit_chains() -> None:
    """Through __context__ (an error raised while handling another) too; the
    nearest error that has an errno or an S3 code decides."""

    def raise_in_handler(first: BaseException, second: BaseException) -> BaseException:
        try:
            try:
                raise first
            except BaseException:
                raise second  # noqa: B904
        except BaseException as e:
            return e

    assert is_permanent(
        raise_in_handler(OSError(errno.ENAMETOOLONG, "long"), RuntimeError("wrapper"))
    )
    assert not is_permanent(
        raise_in_handler(OSError(errno.ENAMETOOLONG, "long"), OSError(errno.ENOSPC, "full"))
    )
    group = BaseExceptionGroup("many", [ValueError("x"), OSError(errno.EFBIG, "big")])
    assert is_permanent(wrapped(group))


# -- the test S3 server refuses keys as real S3 does ------------------------------------


def s3_client(s3_server: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
    )


def assert_key_too_long(call: Callable[[], object]) -> None:
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == "KeyTooLongError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert is_permanent(err.value)


def test_s3_server_refuses_keys_longer_than_1024_bytes(s3_server: S3Server) -> None:
    client = s3_client(s3_server)
    bucket = s3_server.bucket
    base = f"keys-{uuid.uuid4().hex[:8]}/"
    ok = base + "é" * ((1024 - len(base)) // 2)  # bytes, not characters, count
    ok += "k" * (1024 - len(ok.encode()))
    too_long = ok + "k"
    assert len(ok.encode()) == 1024 and len(too_long.encode()) == 1025

    client.put_object(Bucket=bucket, Key=ok, Body=b"fits")
    assert client.get_object(Bucket=bucket, Key=ok)["Body"].read() == b"fits"
    ok_copy = ok[:-1] + "j"
    client.copy_object(Bucket=bucket, Key=ok_copy, CopySource={"Bucket": bucket, "Key": ok})
    upload = client.create_multipart_upload(Bucket=bucket, Key=ok)["UploadId"]
    client.abort_multipart_upload(Bucket=bucket, Key=ok, UploadId=upload)

    assert_key_too_long(lambda: client.put_object(Bucket=bucket, Key=too_long, Body=b"x" * 5000))
    assert_key_too_long(
        lambda: client.copy_object(
            Bucket=bucket, Key=too_long, CopySource={"Bucket": bucket, "Key": ok}
        )
    )
    assert_key_too_long(lambda: client.create_multipart_upload(Bucket=bucket, Key=too_long))
    assert_key_too_long(
        lambda: client.upload_part(
            Bucket=bucket, Key=too_long, UploadId="u", PartNumber=1, Body=b"x"
        )
    )
    assert_key_too_long(
        lambda: client.complete_multipart_upload(
            Bucket=bucket,
            Key=too_long,
            UploadId="u",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]},
        )
    )
    # Nothing was stored under the long key; the connection still serves requests.
    assert s3_server.objects(base) == {ok: 4, ok_copy: 4}


def test_a_key_s3_refuses_is_a_permanent_store_failure(tmp_path: Path, s3_server: S3Server) -> None:
    async def body(storage: Storage, ns: str) -> None:
        with pytest.raises(StoreUnavailable) as err:
            await storage.put(ns, DEEP_FILE, source_file(tmp_path, b"deep"))
        assert is_permanent(err.value)
        await storage.put(ns, "/shallow", source_file(tmp_path, b"fine"))
        assert await storage.read_small(ns, "/shallow") == b"fine"

    with_storage(tmp_path, body, s3_server)


# -- helpers ------------------------------------------------------------------------------


def with_storage(
    tmp_path: Path,
    body: Callable[[Storage, str], Awaitable[None]],
    s3_server: S3Server | None = None,
) -> None:
    """Run body(storage, ns_id) on a started Storage with one WORKSPACE namespace."""
    s3 = (
        None
        if s3_server is None
        else S3Settings(
            bucket=s3_server.bucket,
            prefix=f"paths-{uuid.uuid4().hex[:8]}",
            endpoint_url=s3_server.endpoint,
            max_attempts=1,
        )
    )

    async def main() -> None:
        storage = Storage(tmp_path / "data", "sbx", s3=s3)
        await storage.start()
        try:
            rec = await storage.create_namespace(
                NamespaceType.WORKSPACE, "p", StorageScope.SANDBOX, None
            )
            await body(storage, rec.ns_id)
        finally:
            await storage.stop()

    asyncio.run(main())


def test_a_user_file_named_like_a_temp_file_survives_the_sweep(tmp_path: Path) -> None:
    """A name the sweep would take for an interrupted write's leftover is stored
    under a digest, so the sweep at start never removes a user's file."""
    name = b".tmp_abcdefgh_notes.txt"
    stored = store_name(name)
    assert stored != name.decode()
    host = HostTree(tmp_path / "ns")
    host.write_small("/" + stored, b"mine")
    assert host.sweep_temps() == 0
    assert host.read_small("/" + stored) == b"mine"
