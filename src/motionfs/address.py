"""Where a store is: the one place that turns what a user wrote (`--store`, or
the seed constructor's `provider_type` and `provider_config`) into a store.

A store is a local directory (the filesystem provider; the index, cache and
log live in it), an s3 bucket and prefix (the bytes live there; the index,
cache and log live in a local index directory), `sqlite:///path/store.db`
(every byte in that one file; the index, cache and log in a directory beside
it, `store.db.motionfs/`), or `memory://` (a RAM drive: the bytes live in the
serving process, the index and cache in a private temporary folder, and all
of it is gone at unmount). Anything else is refused in one line, never turned
into a folder with a strange name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from motionfs.errors import SetupError
from motionfs.motion.models import ProviderType
from motionfs.store.sqlitedb import SCHEME as SQLITE
from motionfs.store.sqlitedb import parse_path as sqlite_path

SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
SEED_S3_KEYS = {"bucket_name", "bucket", "prefix", "endpoint_url", "index"}
SEED_FILESYSTEM_KEYS = {"store", "root_path"}
SEED_SQLITE_KEYS = {"db_path", "index"}
MEMORY = "memory://"


def default_store() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "motionfs"


def memory_dir(mountpoint: Path) -> Path:
    """The private folder of a memory store mounted at `mountpoint`: the same
    for the command that starts the daemon and the daemon itself."""
    key = hashlib.sha256(str(mountpoint.absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"motionfs-memory-{os.getuid()}-{key}"


def default_s3_index(url: str) -> Path:
    """Where an s3 store's index, cache and log live unless --index says otherwise."""
    rest = url.removeprefix("s3://").strip("/")
    return default_store() / "s3" / rest.replace("/", "%")


def default_sqlite_index(db: Path) -> Path:
    """Beside the store file: `store.db` keeps its index in `store.db.motionfs/`."""
    return db.with_name(db.name + ".motionfs")


class StoreAddress(BaseModel):
    """A store: its local directory (the store, or the index directory of an
    s3, sqlite or memory store), for s3 the bucket address and endpoint, for
    sqlite the store file."""

    local: Path
    s3_url: str | None = None
    s3_endpoint: str | None = None
    memory: bool = False
    sqlite_db: Path | None = None

    def mount_fields(self) -> dict[str, Any]:
        """The store's fields of MountOptions."""
        return {
            "store": self.local,
            "s3_url": self.s3_url,
            "s3_endpoint": self.s3_endpoint,
            "memory": self.memory,
            "sqlite_db": self.sqlite_db,
        }

    @classmethod
    def parse(
        cls,
        store: str | Path | None,
        index_dir: str | Path | None = None,
        s3_endpoint: str | None = None,
        mountpoint: Path | None = None,
    ) -> StoreAddress:
        """`--store` (a folder, `s3://BUCKET/PREFIX`, `sqlite:///FILE`,
        `memory://` or nothing for the default), `--index` and `--s3-endpoint`
        as the command line takes them; `mountpoint` names a memory store's
        private folder."""
        text = None if store is None else str(store)
        if text is not None and text.startswith(SQLITE):
            if s3_endpoint is not None:
                raise SetupError("--s3-endpoint is for an s3://BUCKET/PREFIX store")
            try:
                db = sqlite_path(text)
            except ValueError as e:
                raise SetupError(str(e)) from None
            local = Path(index_dir).expanduser() if index_dir else default_sqlite_index(db)
            return cls(local=local.absolute(), sqlite_db=db)
        if text is not None and text.startswith("s3://"):
            local = Path(index_dir).expanduser() if index_dir else default_s3_index(text)
            return cls(local=local.absolute(), s3_url=text, s3_endpoint=s3_endpoint)
        if text == MEMORY:
            if s3_endpoint is not None:
                raise SetupError("--s3-endpoint is for an s3://BUCKET/PREFIX store")
            if index_dir is not None:
                local = Path(index_dir).expanduser()
            elif mountpoint is not None:
                local = memory_dir(mountpoint)
            else:  # the Python API's own, made when its engine starts
                local = Path(tempfile.gettempdir()) / f"motionfs-memory-{uuid.uuid4().hex}"
            return cls(local=local.absolute(), memory=True)
        if text is not None and SCHEME.match(text):
            raise SetupError(
                f"unsupported store address {text}: use a folder, s3://BUCKET/PREFIX, "
                "sqlite:///FILE or memory://"
            )
        if index_dir is not None or s3_endpoint is not None:
            raise SetupError(
                "--index is for an s3://, sqlite:// or memory:// store, "
                "--s3-endpoint for an s3:// one"
            )
        local = Path(text).expanduser() if text else default_store()
        return cls(local=local.absolute())

    @classmethod
    def from_seed(
        cls, provider_type: ProviderType, config: dict[str, Any], store: str | Path | None
    ) -> StoreAddress:
        """The seed constructor's choice: FILESYSTEM takes `store` or
        `root_path` (a folder), S3 takes `bucket_name`, `prefix`,
        `endpoint_url` and optionally `index` (the local index directory),
        SQLITE takes `db_path` (the store file) and optionally `index`, MEMORY
        nothing."""
        if provider_type is ProviderType.FILESYSTEM:
            _only(config, SEED_FILESYSTEM_KEYS, provider_type)
            folder = store or config.get("store") or config.get("root_path")
            if folder is not None and SCHEME.match(str(folder)):
                raise SetupError(
                    f"unsupported store address {folder} for {provider_type.value}: use a folder"
                )
            return cls.parse(folder)
        if provider_type is ProviderType.S3:
            _only(config, SEED_S3_KEYS, provider_type)
            bucket = config.get("bucket_name") or config.get("bucket")
            if not bucket:
                raise SetupError("an S3 store needs provider_config={'bucket_name': ...}")
            prefix = str(config.get("prefix", "")).strip("/")
            url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
            return cls.parse(url, store or config.get("index"), config.get("endpoint_url"))
        if provider_type is ProviderType.SQLITE:
            _only(config, SEED_SQLITE_KEYS, provider_type)
            db = config.get("db_path")
            if not db:
                raise SetupError("a SQLite store needs provider_config={'db_path': ...}")
            return cls.parse(SQLITE + str(db), store or config.get("index"))
        _only(config, set(), provider_type)  # MEMORY, the only one left
        return cls.parse(MEMORY, store)


def _only(config: dict[str, Any], allowed: set[str], provider_type: ProviderType) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise SetupError(
            f"unknown provider_config keys for {provider_type.value}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def check_meta(meta: str | None, address: StoreAddress) -> str | None:
    """The --meta URL, refused in one line (SetupError) when it cannot be one."""
    if meta is None:
        return None
    if address.memory:
        raise SetupError("--meta is not for a memory:// store (its index ends with the mount)")
    from motionfs.meta.postgres import redact, split_url  # only when a URL is given

    try:
        split_url(meta)
    except ValueError as e:
        raise SetupError(f"--meta {redact(meta)}: {e}") from None
    return meta
