"""``disenttalk manifest``: a folder (or ``s3://`` prefix) of talking-head videos → ``manifest.jsonl``.

Every video file under the folder becomes one row of the manifest ``preprocess`` reads
(``clip_id``, ``path``, ``speaker``, ``language``, ``sentence``, ``duration_s``, ``split``):

- **speaker**: the first folder below the root (``videos/alice/talk1.mp4`` → ``alice``), else the
  file name without its running number (``WRA_KellyAyotte_000.mp4`` → ``WRA_KellyAyotte``), or a
  sidecar's ``speaker``;
- **language**: ``--language``, else a sidecar ``<video>.json`` (``{"language": ..., "speaker":
  ..., "sentence": ...}``, any of them), else a folder named like a language code (``en/``,
  ``zh/``, ``yue/``), else ``und``;
- **split**: by speaker, so no person is in two splits: speakers are ordered by a hash of their
  name (stable as the folder grows) and the first ``--test`` / ``--val`` share of them (at least
  one each when there are three or more speakers) are held out.

Files that are not readable videos with an audio track are listed as skipped with the reason;
nothing else is written for them. The manifest is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from workflows.common import UserError, user_errors
from workflows.platform import storage

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
LANGUAGE_DIR = re.compile(r"^[a-z]{2,3}$")
SIDECAR_KEYS = ("language", "speaker", "sentence")


def _relative(root: str, uri: str) -> list[str]:
    """Path parts of ``uri`` below ``root`` (a local folder or an s3:// prefix)."""
    if storage.is_s3(uri):
        return uri[len(root.rstrip("/")) + 1 :].split("/")
    return list(Path(uri).relative_to(root).parts)


def clip_id(parts: list[str]) -> str:
    """A store-safe id from the path below the root: ``alice/talk 1.mp4`` → ``alice__talk_1``."""
    stem = [*parts[:-1], parts[-1].rsplit(".", 1)[0]]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(stem)).strip("_") or "clip"


def speaker_of(parts: list[str]) -> str:
    """First folder below the root that is not a language folder, else the file name without its
    running number (``WRA_KellyAyotte_000.mp4`` → ``WRA_KellyAyotte``)."""
    folders = [p for p in parts[:-1] if not LANGUAGE_DIR.match(p)]
    if folders:
        return folders[0]
    stem = parts[-1].rsplit(".", 1)[0]
    return re.sub(r"[_\- ]*\d+$", "", stem) or stem


def language_of(parts: list[str]) -> str | None:
    """A folder named like a language code, if any."""
    found = [p for p in parts[:-1] if LANGUAGE_DIR.match(p)]
    return found[-1] if found else None


def probe(uri: str) -> tuple[float | None, str | None]:
    """(duration in seconds, None) of a readable video with audio, else (None, reason)."""
    import av

    try:
        with storage.local_copy(uri) as path, av.open(str(path)) as container:
            if not container.streams.video:
                return None, "no video stream"
            if not container.streams.audio:
                return None, "no audio stream"
            stream = container.streams.video[0]
            if container.duration:
                duration = container.duration / 1_000_000
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                return None, "unknown duration"
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"not a readable video ({exc})"
    return (duration, None) if duration > 0 else (None, "empty video")


def assign_splits(speakers: list[str], val: float, test: float) -> dict[str, str]:
    """Speaker → split: ordered by a hash of the name, the first ``test`` share to test, the next
    ``val`` share to val (at least one each with three or more speakers), the rest to train."""
    order = sorted(set(speakers), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n = len(order)

    def count(share: float) -> int:
        return 0 if share <= 0 else max(1 if n >= 3 else 0, int(math.floor(share * n + 0.5)))

    n_test, n_val = count(test), count(val)
    if n_test + n_val >= n and n:
        raise UserError(f"{n} speaker(s) cannot fill test ({n_test}) and val ({n_val}) and leave "
                        "any for training; lower --test/--val")
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(order)}


def build(root: str, language: str | None = None, val: float = 0.1, test: float = 0.1
          ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(manifest rows, skipped files with reasons) for the videos under ``root``."""
    root = root.rstrip("/") if storage.is_s3(root) else str(Path(root).expanduser().resolve())
    if not storage.is_s3(root) and not Path(root).is_dir():
        raise UserError(f"{root}: no such folder")
    files = storage.list_files(root)
    sidecars = {f for f in files if f.endswith(".json")}
    rows, skipped = [], []
    for uri in files:
        if uri in sidecars:
            continue
        if not uri.lower().endswith(VIDEO_SUFFIXES):
            skipped.append({"path": uri, "reason": "not a video file"})
            continue
        duration, problem = probe(uri)
        if problem:
            skipped.append({"path": uri, "reason": problem})
            continue
        parts = _relative(root, uri)
        side: dict[str, Any] = {}
        sidecar = uri.rsplit(".", 1)[0] + ".json"
        if sidecar in sidecars:
            try:
                loaded = json.loads(storage.read_text(sidecar))
                side = {k: str(loaded[k]) for k in SIDECAR_KEYS if isinstance(loaded, dict) and loaded.get(k)}
            except ValueError as exc:
                skipped.append({"path": sidecar, "reason": f"sidecar is not JSON ({exc}); ignored"})
        rows.append({"clip_id": clip_id(parts), "path": uri,
                     "speaker": side.get("speaker") or speaker_of(parts),
                     "language": language or side.get("language") or language_of(parts) or "und",
                     "sentence": side.get("sentence", ""), "duration_s": round(duration, 3)})
    ids = Counter(r["clip_id"] for r in rows)
    if dup := sorted(i for i, c in ids.items() if c > 1):
        raise UserError(f"clip ids collide after cleaning file names: {dup[:5]}")
    splits = assign_splits([r["speaker"] for r in rows], val, test)
    for row in rows:
        row["split"] = splits[row["speaker"]]
    return sorted(rows, key=lambda r: r["clip_id"]), skipped


def summary(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    """What the manifest holds: clips, hours and speakers per split and language; what was skipped."""
    lines = []
    for split in ("train", "val", "test"):
        part = [r for r in rows if r["split"] == split]
        langs = Counter(r["language"] for r in part)
        lines.append(f"  {split:5s} {len(part):5d} clips  {sum(r['duration_s'] for r in part) / 3600:7.2f} h  "
                     f"{len({r['speaker'] for r in part}):4d} speakers  "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(langs.items())))
    for item in skipped:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    return "\n".join(lines)


@user_errors("manifest")
def cli(
    source: str = typer.Argument(..., help="folder or s3:// prefix holding the videos"),
    out: str = typer.Option(..., help="manifest to write (local or s3://), e.g. data/manifest.jsonl"),
    language: str | None = typer.Option(None, help="language of every clip (else sidecar / folder name)"),
    val: float = typer.Option(0.1, min=0.0, max=0.9, help="share of speakers held out for val"),
    test: float = typer.Option(0.1, min=0.0, max=0.9, help="share of speakers held out for test"),
) -> None:
    """Build a manifest from a folder of videos (splits by speaker)."""
    rows, skipped = build(source, language, val, test)
    if not rows:
        raise UserError(f"{source}: no readable videos with audio\n{summary(rows, skipped)}")
    storage.write_text(out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    typer.echo(f"{len(rows)} clips → {out}\n{summary(rows, skipped)}")


if __name__ == "__main__":  # python -m workflows.manifest DIR --out manifest.jsonl
    typer.run(cli)
