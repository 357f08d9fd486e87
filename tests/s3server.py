"""A real S3-compatible endpoint on 127.0.0.1 for tests and benchmarks.

moto's server holds the objects (in its own process, in memory), as
`python -m moto.server` runs it, with one difference: like real S3 it refuses
object keys longer than 1024 bytes (400 KeyTooLongError) when an object is
written (PUT, CopyObject, multipart uploads); moto alone accepts them.
Clients talk to it through a small TCP relay process on a second port, which
is the endpoint they are given: `stop()` kills the relay (new connections are
refused, open ones are cut, like a server that went away) and `start()`
listens again on the same port, with every object still there. Stopping moto
itself would forget the bucket, so an outage test could not check that
nothing was lost. The relay is a process of its own, not a thread of the
test: a test blocked in a system call that holds the GIL (mmap.flush() does,
while the daemon uploads for its msync) must not stall the endpoint.

    with S3Server() as s3:               # moto + relay + bucket, AWS_* env set
        s3.endpoint                       # "http://127.0.0.1:PORT"
        s3.store_url("drive")             # "s3://BUCKET/drive"
        s3.stop(); s3.start()             # an outage, then the endpoint is back
        s3.objects("drive/")              # {key: size} as the bucket holds them
        s3.get("drive/ns/.../x")          # an object's bytes
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from types import TracebackType
from typing import Any

# Dummy credentials: moto accepts anything; the AWS SDK insists on some.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "motionfs-test",
    "AWS_SECRET_ACCESS_KEY": "motionfs-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read the developer's own ~/.aws files in tests.
    "AWS_CONFIG_FILE": "/nonexistent/motionfs-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/motionfs-test-aws-credentials",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {timeout:.0f} s") from None
            time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    proc.wait(timeout=10)


class _Relay:
    """Forward TCP connections from `port` to `upstream` (run in its own process)."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port = port
        self.upstream = upstream
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _serve_relay(port: int, upstream: int) -> None:
    relay = _Relay(port, upstream)
    relay.start()
    threading.Event().wait()


class S3Server:
    """moto's S3 server on 127.0.0.1 with a bucket, behind a switchable relay."""

    def __init__(self, bucket: str | None = None) -> None:
        self.bucket = bucket or f"motionfs-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self._moto_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._relay: subprocess.Popen[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> S3Server:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start moto and the relay, create the bucket, set AWS_* in os.environ."""
        for k, v in AWS_ENV.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "moto", "127.0.0.1", str(self._moto_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(self._moto_port, self._proc, "moto.server")
            self.start()
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.stop()
        _end(self._proc)
        self._proc = None
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()

    def stop(self) -> None:
        """The endpoint goes away: connections are refused (objects are kept)."""
        _end(self._relay)
        self._relay = None

    def start(self) -> None:
        """The endpoint is back on the same port."""
        if self._relay is not None and self._relay.poll() is None:
            return
        self._relay = subprocess.Popen(
            [sys.executable, __file__, "relay", str(self.port), str(self._moto_port)],
            stdin=subprocess.DEVNULL,
        )
        _wait_port(self.port, self._relay, "the s3 relay")

    # -- looking at the bucket ------------------------------------------------------

    def store_url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def client(self) -> Any:
        """A boto3 S3 client straight to moto (not through the relay)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self._moto_port}",
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        )

    def objects(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under `prefix`."""
        out: dict[str, int] = {}
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def get(self, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data


# -- moto, with real S3's key length limit ---------------------------------------------

MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
_KEY_TOO_LONG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>KeyTooLongError</Code><Message>Your key is too long</Message>"
    "<Size>{size}</Size><MaxSizeAllowed>{limit}</MaxSizeAllowed>"
    "<RequestId>{rid}</RequestId><HostId>{rid}</HostId></Error>"
)


class RefuseLongKeys:
    """WSGI middleware: answer a write of an object whose key is longer than
    S3 allows as S3 does (400 KeyTooLongError); pass everything else to moto.

    Writes are PUT (PutObject, CopyObject's destination, UploadPart and
    UploadPartCopy) and POST ?uploads / ?uploadId (CreateMultipartUpload,
    CompleteMultipartUpload). Path-style addressing (/bucket/key), as clients
    of an endpoint on 127.0.0.1 use.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        size = self._written_key_size(environ)
        if size is None or size <= MAX_KEY_BYTES:
            return self.app(environ, start_response)
        from werkzeug.wsgi import get_input_stream

        # Read the body the client sends anyway, so the connection stays usable.
        stream = get_input_stream(environ)
        while stream.read(1 << 16):
            pass
        body = _KEY_TOO_LONG.format(size=size, limit=MAX_KEY_BYTES, rid=uuid.uuid4().hex)
        data = body.encode()
        start_response(
            "400 Bad Request",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))],
        )
        return [data]

    @staticmethod
    def _written_key_size(environ: dict[str, Any]) -> int | None:
        """Bytes of the object key a request writes; None if it writes no object."""
        import urllib.parse

        method = environ.get("REQUEST_METHOD", "")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if method == "POST":
            if "uploads" not in query and "uploadId" not in query:
                return None
        elif method != "PUT":
            return None
        # PATH_INFO holds the path's bytes, percent-decoded, as latin-1 (PEP 3333).
        raw = str(environ.get("PATH_INFO", "")).encode("latin-1")
        parts = raw.lstrip(b"/").split(b"/", 1)
        if len(parts) < 2 or not parts[1]:
            return None  # a bucket, not an object
        return len(parts[1])


def _serve_moto(host: str, port: int) -> None:
    """What `python -m moto.server -H host -p port` does, behind RefuseLongKeys."""
    import signal

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]
    run_simple(
        host,
        port,
        RefuseLongKeys(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__" and sys.argv[1:2] == ["relay"]:
    _serve_relay(int(sys.argv[2]), int(sys.argv[3]))
elif __name__ == "__main__" and sys.argv[1:2] == ["moto"]:
    _serve_moto(sys.argv[2], int(sys.argv[3]))
