"""Where a store is: the one place that turns what a user wrote (`--store`, or
the seed constructor's `provider_type` and `provider_config`) into a store.

A store is a local directory (the filesystem provider; the index, cache and
log live in it) or an s3 bucket and prefix (the bytes live there; the index,
cache and log live in a local index directory). Anything else is refused in
one line, never turned into a folder with a strange name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from motionfs.errors import SetupError
from motionfs.motion.models import ProviderType

SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
SEED_S3_KEYS = {"bucket_name", "bucket", "prefix", "endpoint_url", "index"}
SEED_FILESYSTEM_KEYS = {"store", "root_path"}


def default_store() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "motionfs"


def default_s3_index(url: str) -> Path:
    """Where an s3 store's index, cache and log live unless --index says otherwise."""
    rest = url.removeprefix("s3://").strip("/")
    return default_store() / "s3" / rest.replace("/", "%")


class StoreAddress(BaseModel):
    """A store: its local directory (the store, or an s3 store's index) and,
    for s3, the bucket address and endpoint."""

    local: Path
    s3_url: str | None = None
    s3_endpoint: str | None = None

    @classmethod
    def parse(
        cls,
        store: str | Path | None,
        index_dir: str | Path | None = None,
        s3_endpoint: str | None = None,
    ) -> StoreAddress:
        """`--store` (a folder, `s3://BUCKET/PREFIX` or nothing for the default),
        `--index` and `--s3-endpoint` as the command line takes them."""
        text = None if store is None else str(store)
        if text is not None and text.startswith("s3://"):
            local = Path(index_dir).expanduser() if index_dir else default_s3_index(text)
            return cls(local=local.absolute(), s3_url=text, s3_endpoint=s3_endpoint)
        if text is not None and SCHEME.match(text):
            raise SetupError(
                f"unsupported store address {text}: use a folder or s3://BUCKET/PREFIX"
            )
        if index_dir is not None or s3_endpoint is not None:
            raise SetupError("--index and --s3-endpoint are for an s3://BUCKET/PREFIX store")
        local = Path(text).expanduser() if text else default_store()
        return cls(local=local.absolute())

    @classmethod
    def from_seed(
        cls, provider_type: ProviderType, config: dict[str, Any], store: str | Path | None
    ) -> StoreAddress:
        """The seed constructor's choice: FILESYSTEM takes `store` or
        `root_path` (a folder), S3 takes `bucket_name`, `prefix`,
        `endpoint_url` and optionally `index` (the local index directory)."""
        if provider_type is ProviderType.FILESYSTEM:
            _only(config, SEED_FILESYSTEM_KEYS, provider_type)
            return cls.parse(store or config.get("store") or config.get("root_path"))
        if provider_type is ProviderType.S3:
            _only(config, SEED_S3_KEYS, provider_type)
            bucket = config.get("bucket_name") or config.get("bucket")
            if not bucket:
                raise SetupError("an S3 store needs provider_config={'bucket_name': ...}")
            prefix = str(config.get("prefix", "")).strip("/")
            url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
            return cls.parse(url, store or config.get("index"), config.get("endpoint_url"))
        raise SetupError(
            f"{provider_type.value} stores are not available yet: "
            f"use {ProviderType.FILESYSTEM.value} or {ProviderType.S3.value}"
        )


def _only(config: dict[str, Any], allowed: set[str], provider_type: ProviderType) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise SetupError(
            f"unknown provider_config keys for {provider_type.value}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(allowed))})"
        )
