"""The portrait store every Portraits replica reads: uploaded photos kept under their portrait id.

A portrait id names a photo and the face asked for; it is the HMAC-SHA256 of the photo's bytes
with a secret shared by the deployment (:func:`shared_secret`), so it cannot be computed from
the photo alone. The replica that prepares a portrait stores the uploaded bytes (at most
``limits.max_upload_mb``) under the id, in a local folder (one machine: every replica sees the
same disk) or under an ``s3://`` prefix (a cluster); any replica that is asked for an id it has
not prepared reads the photo back and prepares it again. Each replica's prepared portraits are
only a cache of the store (:class:`LruCache`, bounded by count and locked: Serve runs a
deployment's sync methods in threads).

The store is bounded by bytes (``portrait_store.max_mb``) and age (``max_age_h``), never by a
count that any client drives: an entry younger than ``keep_s`` is never removed to make room;
when the rest cannot make room, new uploads get 503 ``portrait_store_full`` until old ones age
out, so a client uploading many photos cannot evict the portraits other clients are using.
Each replica checks the bound against its own listing of the store (at most every ``sweep_s``,
or when its estimate says a put would go over), so N replicas may overshoot it by what they
store in between.

Layout under the store's root: ``photos/<id[:2]>/<id>.bin`` (a short header with the face
index, then the photo's bytes) and ``secret/<name>.key``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from typing import Any

from serve.errors import ApiError

logger = logging.getLogger("ray.serve")
SECRET_ENV = "DISENTTALK_PORTRAIT_SECRET"  # overrides the secret kept in the store
MAGIC = b"DTP1"
RECORD_SUFFIX = ".bin"
SETTLE_S = 1.0  # how long a replica that created a secret waits for a concurrent creator's


def default_uri() -> str:
    """``<workspace>/serve/portraits`` (``DISENTTALK_HOME``, forwarded to the replicas)."""
    from disenttalk import paths

    return str(paths.home() / "serve" / "portraits")


class LruCache:
    """A thread-safe LRU map holding at most ``size`` values."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def pack(face: int | None, data: bytes) -> bytes:
    """A stored record: magic, header length, JSON header ``{"face"}``, the photo's bytes."""
    header = json.dumps({"face": face}).encode()
    return MAGIC + struct.pack(">H", len(header)) + header + data


def unpack(record: bytes) -> tuple[int | None, bytes]:
    """``(face, photo bytes)`` of a record (ValueError if it is not one)."""
    if record[:4] != MAGIC or len(record) < 6:
        raise ValueError("not a portrait record")
    (size,) = struct.unpack(">H", record[4:6])
    header = json.loads(record[6:6 + size])
    return header.get("face"), record[6 + size:]


def unavailable(exc: BaseException) -> ApiError:
    """503 for a store that could not be read or written (the details go to the replica log)."""
    logger.error("portrait store: %s: %s", type(exc).__name__, exc)
    return ApiError(503, "portrait_store_unavailable", "portraits cannot be stored or read just now; "
                    "try again shortly")


class PortraitStore:
    """Photos by portrait id under ``uri`` (a folder or ``s3://bucket/prefix``), bounded by bytes
    and age; safe to share between threads, replicas and processes."""

    def __init__(self, uri: str, max_bytes: int, max_age_s: float, keep_s: float = 600.0,
                 sweep_s: float = 30.0) -> None:
        from workflows.platform import storage

        self.uri, self.max_bytes, self.max_age_s = str(uri), int(max_bytes), float(max_age_s)
        self.keep_s, self.sweep_s = min(float(keep_s), self.max_age_s), float(sweep_s)
        self.fs, self.root = storage.filesystem(self.uri)
        storage.makedirs(f"{self.uri.rstrip('/')}/photos")  # local: listings never meet it half-made
        self._lock = threading.Lock()
        self._stored = 0  # bytes in the store at the last sweep plus this instance's puts since
        self._swept = -float("inf")  # monotonic time of the last sweep

    @classmethod
    def from_config(cls, opts: Any) -> PortraitStore:
        """The store of ``ServeConfig.portrait_store``."""
        return cls(opts.uri or default_uri(), int(opts.max_mb * 1024 * 1024), opts.max_age_h * 3600.0,
                   opts.keep_s, opts.sweep_s)

    # -- paths --------------------------------------------------------------------------------
    def _path(self, portrait_id: str) -> str:
        return f"{self.root}/photos/{portrait_id[:2]}/{portrait_id}{RECORD_SUFFIX}"

    def _uri(self, path: str) -> str:
        from workflows.platform import storage

        return f"s3://{path}" if storage.is_s3(self.uri) else path

    def _write(self, path: str, data: bytes) -> None:
        from workflows.platform import storage

        storage.write_bytes(self._uri(path), data)  # atomic: readers see all of it or nothing

    def _age(self, info: Any, now: float) -> float:
        mtime = info.mtime.timestamp() if info.mtime is not None else now
        return max(0.0, now - mtime)

    # -- entries ------------------------------------------------------------------------------
    def put(self, portrait_id: str, face: int | None, data: bytes) -> None:
        """Keep ``data`` under ``portrait_id`` (refreshed when it is there and half its age is
        gone); 503 ``portrait_store_full`` when no room can be made."""
        from pyarrow import fs as pafs

        path = self._path(portrait_id)
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.File and self._age(info, time.time()) < self.max_age_s / 2:
                return
            record = pack(face, data)
            self._make_room(len(record))
            self._write(path, record)
        except ApiError:
            raise
        except Exception as exc:
            raise unavailable(exc) from None
        with self._lock:
            self._stored += len(record)

    def get(self, portrait_id: str) -> tuple[int | None, bytes] | None:
        """``(face, photo bytes)`` stored under ``portrait_id``, or None (never stored, expired,
        removed); 503 ``portrait_store_unavailable`` when the store cannot be read."""
        from pyarrow import fs as pafs

        path = self._path(portrait_id)
        try:
            info = self.fs.get_file_info(path)
            if info.type != pafs.FileType.File or self._age(info, time.time()) > self.max_age_s:
                return None
            with self.fs.open_input_stream(path) as f:
                record = f.read()
        except FileNotFoundError:
            return None  # removed between the look and the read
        except Exception as exc:
            raise unavailable(exc) from None
        try:
            return unpack(record)
        except ValueError:
            logger.warning("portrait store: %s is not a portrait record; ignored", portrait_id)
            return None

    # -- bounds -------------------------------------------------------------------------------
    def _make_room(self, size: int) -> None:
        """Sweep when due or when ``size`` more bytes would pass the bound; 503 if still full."""
        with self._lock:
            due = time.monotonic() - self._swept > self.sweep_s
            if not due and self._stored + size <= self.max_bytes:
                return
            stored = self._sweep_locked(room=size)
            if stored + size > self.max_bytes:
                raise ApiError(503, "portrait_store_full", "too many photos were uploaded lately; "
                               "try again in a few minutes")

    def sweep(self, room: int = 0) -> int:
        """Remove expired entries, then the oldest past ``keep_s`` until ``room`` more bytes fit;
        the bytes left in the store."""
        with self._lock:
            return self._sweep_locked(room)

    def _sweep_locked(self, room: int) -> int:
        now = time.time()
        entries = sorted(((self._age(i, now), i.size or 0, i.path) for i in self._listing()), reverse=True)
        total = sum(size for _, size, _ in entries)
        for age, size, path in entries:  # oldest first
            if age <= self.max_age_s and (total + room <= self.max_bytes or age < self.keep_s):
                continue
            self._delete(path)
            total -= size
        self._stored, self._swept = total, time.monotonic()
        return total

    def _listing(self) -> list[Any]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(f"{self.root}/photos", allow_not_found=True, recursive=True)
        for attempt in range(3):
            try:
                infos = self.fs.get_file_info(selector)
                break
            except FileNotFoundError:  # a folder appeared or went while another writer walked it
                if attempt == 2:
                    raise
        return [i for i in infos if i.type == pafs.FileType.File and i.path.endswith(RECORD_SUFFIX)]

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError) as exc:  # another replica removed it first
            logger.debug("portrait store: %s not removed: %s", path, exc)

    def stored_bytes(self) -> int:
        """Bytes in the store now (a listing)."""
        return sum(i.size or 0 for i in self._listing())

    # -- the shared secret ----------------------------------------------------------------------
    def secret(self) -> bytes:
        """The HMAC key of portrait ids: ``$DISENTTALK_PORTRAIT_SECRET``, else the one kept in the
        store (created by the first replica; concurrent creators agree on the smallest name)."""
        env = os.environ.get(SECRET_ENV, "").strip()
        if env:
            return env.encode()
        try:
            keys = self._secret_keys()
            if not keys:
                name = secrets.token_hex(16)
                self._write(f"{self.root}/secret/{name}.key", secrets.token_hex(32).encode())
                time.sleep(SETTLE_S)  # a replica starting at the same time writes its own now
                keys = self._secret_keys()
            with self.fs.open_input_stream(keys[0]) as f:
                return f.read().strip()
        except Exception as exc:
            raise RuntimeError(f"portrait store {self.uri}: the shared secret cannot be read or "
                               f"created ({type(exc).__name__}: {exc})") from exc

    def _secret_keys(self) -> list[str]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(f"{self.root}/secret", allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.path.endswith(".key"))
