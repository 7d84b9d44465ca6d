"""The driver of ``disenttalk preprocess``: the manifest, the Ray Data job, the store tables."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from workflows.common import UserError, format_summary, load_config, user_errors
from workflows.platform import clipstore, storage

if TYPE_CHECKING:
    from workflows.preprocess.worker import PreprocessConfig

MANIFEST_FIELDS = ("clip_id", "path", "language", "speaker", "sentence", "duration_s", "split")


def read_manifest(uri: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest rows with ``uri`` resolved (relative paths are relative to the manifest), and
    rejects for lines that are not valid rows."""
    if not storage.exists(uri):
        raise UserError(f"no manifest at {uri} (a JSON-lines file of clips; `disenttalk demo-data` writes one)")
    base = storage.parent(uri)
    rows, bad = [], []
    for n, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not item.get("clip_id") or not item.get("path"):
                raise ValueError("needs clip_id and path")
        except ValueError as exc:
            bad.append(
                {"clip_id": f"manifest:{n}", "source_uri": uri, "content_hash": "",
                 "reason": "unreadable", "detail": f"manifest line {n}: {exc}"}
            )  # fmt: skip
            continue
        row = {k: "" if item.get(k) is None else str(item[k]) for k in MANIFEST_FIELDS}
        row["split"] = row["split"] or "train"
        row["uri"] = storage.resolve(row["path"], base)
        rows.append(row)
    return rows, bad


def done_hashes(index: list[dict], rejects: list[dict], current: str) -> frozenset[str]:
    """Content hashes a run skips: every clip in the store, and the rejects whose settings and
    code (``fingerprint``) are today's; a reject from other settings or code is tried again."""
    kept = [r for r in rejects if r.get("fingerprint") == current]
    return frozenset(r["content_hash"] for r in index + kept if r["content_hash"])


def _merge(old: list[dict], new: list[dict], replaced: set[str]) -> list[dict]:
    """Old rows of source clips not processed again in this run, then this run's rows."""
    return [r for r in old if clipstore.source_of(r) not in replaced] + new


def _process(rows: list[dict[str, Any]], out: str, cfg: PreprocessConfig,
             done: frozenset[str]) -> list[dict[str, Any]]:
    """The Ray Data job: every manifest row through the ClipProcessor actor pool; its result rows."""
    import ray

    from workflows.platform.raycluster import init_ray, shutdown_if_started
    from workflows.preprocess.worker import ClipProcessor

    started = init_ray(cfg.ray)
    try:
        if not rows:
            return []
        pool = cfg.actors
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ClipProcessor,
            fn_constructor_kwargs={"cfg": cfg, "out": out, "done_hashes": done},
            compute=ray.data.ActorPoolStrategy(
                min_size=pool.min_size, max_size=min(pool.max_size, len(rows))
            ),
            batch_size=pool.batch_size,
            batch_format="pandas",
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus or None,
        )
        return ds.take_all()
    finally:
        shutdown_if_started(started)


def _write_tables(out: str, results: list[dict[str, Any]], bad_lines: list[dict[str, Any]],
                  old_index: list[dict], old_rejects: list[dict]) -> dict[str, list[dict]]:
    """Merge this run's clips and rejects into the store's tables and write them; the rows
    (``ok``, ``rejected``: this run's; ``index``, ``rejects``: the tables)."""
    # A task retried after its node died may have reported before dying; a record is named by
    # content hash (and part), so the same name twice is the same clip: keep it once.
    ok = list({row["record"]: row for row in
               (json.loads(r["row"]) for r in results if r["status"] == "ok")}.values())
    rejected = [json.loads(r["row"]) for r in results if r["status"] == "rejected"] + bad_lines
    replaced = {clipstore.source_of(r) for r in ok + rejected}
    index = _merge(old_index, ok, replaced)
    rejects = _merge(old_rejects, rejected, replaced)
    clipstore.write_table(storage.join(out, clipstore.INDEX), index, clipstore.INDEX_SCHEMA)
    clipstore.write_rejects(out, rejects)
    return {"ok": ok, "rejected": rejected, "index": index, "rejects": rejects}


def _summary(rows: list[dict[str, Any]], bad_lines: list[dict[str, Any]],
             results: list[dict[str, Any]], tables: dict[str, list[dict]],
             cfg: PreprocessConfig) -> dict[str, Any]:
    """The stage's summary; ``seconds`` is filled in by the caller."""
    ok, rejected = tables["ok"], tables["rejected"]
    source_seconds = {r["content_hash"]: r["seconds"] for r in results if r["status"] == "ok"}
    return {
        "clips": len(rows) + len(bad_lines),
        "ok": len({clipstore.source_of(r) for r in ok}),  # source clips that gave training clips
        "segments": len(ok),  # training clips written (a long source gives several)
        "skipped": sum(r["status"] == "skipped" for r in results),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "frames": sum(r["num_frames"] for r in ok),
        "hours": sum(r["duration_s"] for r in ok) / 3600.0,
        "store_clips": len(tables["index"]),
        "store_rejects": len(tables["rejects"]),
        "seconds": 0.0,
        "clip_seconds_mean": (  # per source clip (its segments share one measurement)
            sum(source_seconds.values()) / len(source_seconds) if source_seconds else 0.0
        ),
        # the crop the landmarks are expressed in: generation cuts portraits the same way
        "framing": {"crop_size": cfg.face.crop_size, "crop_margin": cfg.face.crop_margin},
        # source clips handled per Ray node id (shows the work spread over a cluster's nodes)
        "nodes": dict(sorted(Counter(r.get("node") or "local" for r in results).items())),
    }


def _log(manifest: str, out: str, cfg: PreprocessConfig, summary: dict[str, Any],
         has_rejects: bool) -> None:
    """The stage's MLflow run: params, flat metrics (rejects per reason), summary, rejects table."""
    from workflows.platform import tracking

    with tracking.start_run(cfg.mlflow, cfg, tags={"stage": "preprocess"}) as run_log:
        run_log.log_params({"manifest": manifest, "out": out})
        flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
        flat["nodes_used"] = len(summary["nodes"])
        flat.update({f"rejected.{k}": v for k, v in summary["rejected_by_reason"].items()})
        run_log.log_metrics(flat)
        run_log.log_dict(summary, "summary.json")
        if has_rejects:
            run_log.log_bytes(clipstore.REJECTS_JSONL, storage.read_bytes(
                storage.join(out, clipstore.REJECTS_JSONL)))  # fmt: skip


def run(manifest: str, out: str, cfg: PreprocessConfig) -> dict[str, Any]:
    """Preprocess every clip of ``manifest`` into the store at ``out``; returns the summary."""
    from workflows.preprocess.worker import fingerprint

    start = time.perf_counter()
    rows, bad_lines = read_manifest(manifest)
    storage.makedirs(out)
    old_index, old_rejects = clipstore.read_index(out), clipstore.read_rejects(out)
    done = done_hashes(old_index, old_rejects, fingerprint(cfg))
    results = _process(rows, out, cfg, done)
    tables = _write_tables(out, results, bad_lines, old_index, old_rejects)
    summary = _summary(rows, bad_lines, results, tables, cfg)
    summary["seconds"] = time.perf_counter() - start
    storage.write_text(storage.join(out, clipstore.SUMMARY), json.dumps(summary, indent=2))
    _log(manifest, out, cfg, summary, bool(tables["rejects"]))
    return summary


@user_errors("preprocess")
def cli(
    manifest: str = typer.Option(..., help="manifest.jsonl: local path or s3:// URI"),
    out: str = typer.Option(..., help="output store: local folder or s3:// prefix"),
    config: Path | None = typer.Option(None, help="YAML config (default configs/preprocess.yaml)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. actors.max_size=4"),
) -> None:
    """Decode, track and featurise every clip of a manifest with Ray Data; write records + rejects."""
    from workflows.preprocess.worker import PreprocessConfig

    cfg = load_config(PreprocessConfig, "preprocess", config, set_)
    summary = run(manifest, out, cfg)
    typer.echo(format_summary("preprocess", summary))
