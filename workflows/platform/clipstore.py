"""The preprocessed-clip store (docs/design.md §3): what ``preprocess`` writes and later stages read.

Layout under the output URI (a local folder or ``s3://bucket/prefix``)::

    clips/<sha256>.npz     one record per clip, named by the content hash of its source file
    clips/<sha256>-<k>.npz  the k-th clip cut from a source that gave several (a long video)
    index.parquet          one row per good clip (metadata + the record's relative path)
    rejects.parquet        one row per rejected clip with its reason (also rejects.jsonl)
    summary.json           counts of the last run

A record is a plain ``.npz`` (no pickles), so any numpy can read it; each is written in one
atomic step (local: temp file + rename, S3: one PUT) and becomes visible to the index only
after the run that wrote it finishes. Tables are rewritten whole, atomically, at the end of a
run (old rows + new rows), so a crash never leaves a half table.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflows.platform import storage

INDEX = "index.parquet"
REJECTS = "rejects.parquet"
REJECTS_JSONL = "rejects.jsonl"
SUMMARY = "summary.json"

INDEX_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("speaker", pa.string()),
        ("language", pa.string()),
        ("split", pa.string()),
        ("sentence", pa.string()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("valid_fraction", pa.float64()),
        ("feature_dim", pa.int64()),
        ("content_hash", pa.string()),
        ("source_uri", pa.string()),
        ("record", pa.string()),  # path of the .npz relative to the store root
        ("source_clip_id", pa.string()),  # the manifest's clip the record was cut from
        ("start_s", pa.float64()),  # where in that source it starts
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source_uri", pa.string()),
        ("content_hash", pa.string()),  # "" when the file could not be read at all
        ("reason", pa.string()),  # one of REJECT_REASONS
        ("detail", pa.string()),
        ("fingerprint", pa.string()),  # the settings and code that rejected it (None: unknown)
    ]
)
REJECT_REASONS = ("unreadable", "no_face", "too_short", "silent", "av_mismatch", "error")


@dataclass
class ClipRecord:
    """One preprocessed clip: landmarks/validity per video frame, audio and its aligned features."""

    clip_id: str
    speaker: str
    language: str
    split: str
    fps: float
    landmarks: np.ndarray  # float32 [T,478,3] pixels of the 256² aligned crop, NaN where invalid
    valid: np.ndarray  # bool [T]
    audio: np.ndarray  # float32 [S] mono, sample_rate Hz
    sample_rate: int
    features: np.ndarray  # float32 [T,F] audio features aligned to video frames (F=0: none yet)
    source_uri: str
    content_hash: str
    sentence: str = ""
    source_clip_id: str = ""  # the manifest row it was cut from ("" = clip_id)
    start_s: float = 0.0  # its start in that source video
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. crop transforms, span

    @property
    def num_frames(self) -> int:
        """T."""
        return int(len(self.valid))

    def to_bytes(self) -> bytes:
        """Serialise as an uncompressed ``.npz`` (landmarks and audio barely compress)."""
        arrays = {k: v for k, v in asdict(self).items() if k != "extra"}
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        arrays.update({f"extra__{k}": np.asarray(v) for k, v in self.extra.items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClipRecord:
        """Inverse of :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
        extra = {k[len("extra__") :]: raw.pop(k) for k in list(raw) if k.startswith("extra__")}
        scalars = {"clip_id", "speaker", "language", "split", "source_uri", "content_hash", "sentence"}
        kwargs: dict[str, Any] = {k: str(raw.pop(k)) for k in scalars}
        kwargs["source_clip_id"] = str(raw.pop("source_clip_id", ""))  # absent in older records
        kwargs["start_s"] = float(raw.pop("start_s", 0.0))
        kwargs["fps"] = float(raw.pop("fps"))
        kwargs["sample_rate"] = int(raw.pop("sample_rate"))
        return cls(**kwargs, **raw, extra=extra)

    def index_row(self, record: str) -> dict[str, Any]:
        """This clip's row in ``index.parquet``."""
        return {
            "clip_id": self.clip_id,
            "speaker": self.speaker,
            "language": self.language,
            "split": self.split,
            "sentence": self.sentence,
            "fps": float(self.fps),
            "num_frames": self.num_frames,
            "duration_s": self.num_frames / float(self.fps),
            "valid_fraction": float(np.mean(self.valid)) if self.num_frames else 0.0,
            "feature_dim": int(self.features.shape[1]) if self.features.ndim == 2 else 0,
            "content_hash": self.content_hash,
            "source_uri": self.source_uri,
            "record": record,
            "source_clip_id": self.source_clip_id or self.clip_id,
            "start_s": float(self.start_s),
        }


def record_name(content_hash: str, part: int | None = None) -> str:
    """Relative path of a clip's record (``part``: its number among a source's several clips)."""
    return f"clips/{content_hash}.npz" if part is None else f"clips/{content_hash}-{part:03d}.npz"


def source_of(row: Mapping[str, Any]) -> str:
    """The manifest clip an index or reject row comes from."""
    return row.get("source_clip_id") or row["clip_id"]


def write_record(root: str, record: ClipRecord, part: int | None = None) -> str:
    """Write ``record`` under ``root`` atomically; returns its relative path."""
    name = record_name(record.content_hash, part)
    storage.write_bytes(storage.join(root, name), record.to_bytes())
    return name


def read_record(root: str, row: Mapping[str, Any] | str) -> ClipRecord:
    """Read the record of an index row (or a relative path) under ``root``."""
    name = row if isinstance(row, str) else row["record"]
    return ClipRecord.from_bytes(storage.read_bytes(storage.join(root, name)))


def write_table(uri: str, rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> None:
    """Write rows as one parquet file, atomically."""
    table = pa.Table.from_pylist(list(rows), schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())


def read_table(uri: str) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts ([] if it does not exist)."""
    if not storage.exists(uri):
        return []
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()


def read_framing(root: str) -> dict[str, Any] | None:
    """The face crop (``crop_size``, ``crop_margin``) the store's clips were preprocessed with, from
    its summary; None for a store written before the summary recorded it."""
    uri = storage.join(root, SUMMARY)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_text(uri)).get("framing")


def read_index(root: str, split: str | None = None) -> list[dict[str, Any]]:
    """Index rows of the store at ``root``, optionally only one split."""
    rows = read_table(storage.join(root, INDEX))
    return [r for r in rows if split is None or r["split"] == split]


def read_rejects(root: str) -> list[dict[str, Any]]:
    """Reject rows of the store at ``root``."""
    return read_table(storage.join(root, REJECTS))


def write_rejects(root: str, rows: list[Mapping[str, Any]]) -> None:
    """Write the rejects table as parquet and as JSON lines (for people and ``grep``)."""
    write_table(storage.join(root, REJECTS), rows, REJECT_SCHEMA)
    text = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows)
    storage.write_text(storage.join(root, REJECTS_JSONL), text)
