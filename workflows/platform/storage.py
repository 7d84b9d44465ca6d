"""One way to address data: local paths and ``s3://`` URIs, through ``pyarrow.fs``.

Every stage reads and writes through these helpers, so the same command works on a laptop
folder and on a bucket. S3 goes through ``pyarrow.fs.S3FileSystem`` (what Ray Data uses too)
with the endpoint taken from ``AWS_ENDPOINT_URL`` (MinIO, moto, or empty for AWS) and the
usual ``AWS_*`` credentials; ``boto3`` is used only for bucket management. Writes are atomic:
a local file is written beside its target and moved into place, an S3 object appears only
when its single PUT completes.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from workflows.common import UserError

S3_SCHEMES = ("s3", "s3a")
COPY_BLOCK = 8 << 20  # bytes per read when hashing or copying large files


def is_s3(uri: str | Path) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return urlparse(str(uri)).scheme in S3_SCHEMES


def local_path(path: str | Path, what: str) -> Path:
    """``path`` as a local :class:`Path`; a URI is refused with a message naming ``what`` takes
    only local paths (``s3://b/k`` also arrives here as ``s3:/b/k`` when a CLI typed the option
    as a path, which is why the test is on the text)."""
    text = str(path)
    if urlparse(text).scheme in (*S3_SCHEMES, "gs", "http", "https") or text.startswith(("s3:/", "s3a:/", "gs:/")):
        raise UserError(f"{what} takes a local path, not {text!r} (the Ray stages' data, model and "
                        "output locations are the ones that take s3:// URIs)")
    return Path(path)


def join(base: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or URI (always with ``/``)."""
    base = str(base)
    if is_s3(base):
        return posixpath.join(base, *parts)
    return str(Path(base, *parts))


def resolve(uri: str, relative_to: str) -> str:
    """``uri`` as is if absolute (``/…`` or ``s3://…``), else relative to the folder ``relative_to``."""
    if is_s3(uri) or os.path.isabs(uri):
        return uri
    return join(relative_to, uri)


def absolute(uri: str | Path) -> str:
    """``uri`` as is if it is an S3 URI, else the absolute local path: resolved in the driver, so
    Ray tasks and Tune trials, which run in other working directories, find the same files."""
    return str(uri) if is_s3(uri) else str(Path(uri).resolve())


def parent(uri: str | Path) -> str:
    """The folder holding ``uri``."""
    uri = str(uri)
    if is_s3(uri):
        return posixpath.dirname(uri.rstrip("/"))
    return str(Path(uri).parent)


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the environment (``AWS_ENDPOINT_URL``, region, keys)."""
    kwargs: dict = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        parsed = urlparse(endpoint)
        # Arrow wants host:port and the scheme apart; a plain host:port means https.
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow`` filesystem for ``uri`` and the path within it (``bucket/key`` for S3)."""
    uri = str(uri)
    if is_s3(uri):
        parsed = urlparse(uri)
        return s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def exists(uri: str | Path) -> bool:
    """True if a file or folder exists at ``uri``."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str | Path) -> bytes:
    """All bytes of the file at ``uri`` (FileNotFoundError if absent)."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a local file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def read_text(uri: str | Path) -> str:
    """UTF-8 text of the file at ``uri``."""
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically, creating local parent folders."""
    if is_s3(uri):
        fs, path = filesystem(uri)
        with fs.open_output_stream(path) as f:  # one PUT: readers see all or nothing
            f.write(data)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(uri, text.encode("utf-8"))


def makedirs(uri: str | Path) -> None:
    """Create a local folder (S3 has no folders: a no-op there)."""
    if not is_s3(uri):
        Path(uri).mkdir(parents=True, exist_ok=True)


def list_files(uri: str | Path, suffix: str = "", recursive: bool = True) -> list[str]:
    """Sorted URIs of the files under folder ``uri`` whose names end with ``suffix``."""
    uri = str(uri).rstrip("/")
    fs, root = filesystem(uri)
    selector = pafs.FileSelector(root, allow_not_found=True, recursive=recursive)
    out = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.path.endswith(suffix):
            rel = info.path[len(root) :].lstrip("/")
            out.append(join(uri, rel))
    return sorted(out)


def delete(uri: str | Path) -> None:
    """Remove a file if it exists."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def upload_file(local: str | Path, uri: str) -> None:
    """Copy a local file to ``uri``, streamed in blocks (videos are never held in memory whole);
    S3 readers see the object only once it is complete, a local target is replaced atomically."""
    if not is_s3(uri):
        target = Path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(uri)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, length=COPY_BLOCK)


def upload_dir(local: str | Path, uri: str) -> list[str]:
    """Copy every file under the local folder to the folder ``uri``; returns the written URIs."""
    local = Path(local)
    written = []
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target = join(uri, file.relative_to(local).as_posix())
        upload_file(file, target)
        written.append(target)
    return written


def download_dir(uri: str, local: str | Path) -> Path:
    """Copy every file under the folder ``uri`` into the local folder; returns it."""
    local = Path(local)
    base = str(uri).rstrip("/")
    for file in list_files(base):
        rel = file[len(base) :].lstrip("/")
        write_bytes(local / rel, read_bytes(file))
    return local


def pack_dir(uri: str | Path) -> dict[str, bytes]:
    """Every file under a folder (local or s3://) as {relative path: bytes}: a small folder (a
    model bundle, the evaluator) to hand to Ray tasks on any node through the object store."""
    base = str(uri).rstrip("/")
    files = {file[len(base):].lstrip("/"): read_bytes(file) for file in list_files(base)}
    if not files:
        raise FileNotFoundError(f"no files under {uri}")
    return files


def unpack_dir(files: dict[str, bytes]) -> Path:
    """The folder :func:`pack_dir` packed, written once per machine under the temp dir (named by
    a digest of its contents, moved into place whole, so concurrent tasks never see half of it)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    target = Path(tempfile.gettempdir(), "disenttalk-folders", digest.hexdigest()[:20])
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    try:
        staging.rename(target)
    except OSError:  # another task on this machine put it there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def local_copy(uri: str | Path) -> Iterator[Path]:
    """A local path for reading ``uri`` with libraries that need one: the file itself, or for S3
    a temporary copy streamed to disk (never held in memory whole)."""
    if not is_s3(uri):
        if not Path(uri).is_file():
            raise FileNotFoundError(f"no such file: {uri}")
        yield Path(uri)
        return
    fd, tmp = tempfile.mkstemp(suffix=Path(urlparse(str(uri)).path).suffix)
    try:
        fs, path = filesystem(uri)
        with os.fdopen(fd, "wb") as f, fs.open_input_stream(path) as src:
            shutil.copyfileobj(src, f, length=COPY_BLOCK)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an ``s3://`` URI if it does not exist (for local MinIO/moto setups)."""
    import boto3

    bucket = urlparse(uri).netloc
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
