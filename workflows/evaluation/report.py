"""What ``evaluate`` reports: the metrics table as markdown, per-split plots, the output files and
their MLflow copies, and the end summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from workflows.evaluation.config import REFERENCES, SYSTEM, EvaluateConfig
from workflows.evaluation.scoring import Table
from workflows.platform import storage

SUMMARY_METRICS = ("n_clips", "lmd", "gap_closed", "lmd_decoded", "blink_rate", "blink_duration", "sync_conf",
                   "mouth_p95", "mouth_pause")


def markdown(table: Table) -> str:
    """One markdown table: rows (split, system), columns the metrics."""
    from disenttalk.metrics.clip import METRICS

    columns = (*METRICS, "gap_closed", "gap_closed_decoded")
    lines = ["| split | system | n | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for split in table[SYSTEM]:
        for system, splits in table.items():
            row = splits[split]
            cells = " | ".join("–" if math.isnan(row.get(m, math.nan)) else f"{row[m]:.4g}"
                               for m in columns)
            lines.append(f"| {split} | {system} | {int(row['n_clips'])} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_split(result: dict, split: str, folder: Path) -> list[Path]:
    """EAR over time, mouth opening and frame-to-frame change of one clip: model vs truth (and baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, fps = result["curves"], result.get("fps", 25.0)  # results written before fps was kept: 25
    specs = {"ear": ("eye aspect ratio", (SYSTEM, "truth")),
             "mouth": ("mouth opening (× inter-ocular)", (SYSTEM, "truth", "oracle")),
             "change": ("landmark change per frame (× inter-ocular)", (SYSTEM, "truth", "still"))}
    files = []
    for key, (label, systems) in specs.items():
        fig, ax = plt.subplots(figsize=(8, 3))
        for system in (s for s in systems if s in curves):
            y = np.asarray(curves[system][key], dtype=float)
            ax.plot(np.arange(len(y)) / fps, y, label=system, lw=1.2)
        ax.set(xlabel="time (s)", ylabel=label, title=f"{split}: {result['clip_id']}")
        ax.legend(loc="upper right")
        fig.tight_layout()
        file = folder / f"{split.replace('/', '_')}_{key}.png"
        fig.savefig(file, dpi=100)
        plt.close(fig)
        files.append(file)
    return files


def plot_splits(results: list[dict], groups: dict[str, list[dict]], folder: Path) -> None:
    """:func:`plot_split` of every split's first clip (by id) into ``folder``."""
    folder.mkdir()
    by_id = {r["clip_id"]: r for r in results}
    for split, rows in groups.items():
        if rows and rows[0]["clip_id"] in by_id:
            plot_split(by_id[rows[0]["clip_id"]], split, folder)


def baseline_tables(table: Table) -> Table:
    """The reference systems' part of ``table`` ({baseline: {split: {metric: value}}})."""
    return {name: table[name] for name in REFERENCES if name in table}


def output_files(table: Table, results: list[dict]) -> dict[str, str]:
    """The stage's files by name: metrics.json, baselines.json, clips.json, metrics.md."""
    clips = [{k: r[k] for k in ("clip_id", "split", "language", "reference", "scores")} for r in results]
    return {
        "metrics.json": json.dumps(table[SYSTEM], indent=2, sort_keys=True),
        "baselines.json": json.dumps(baseline_tables(table), indent=2, sort_keys=True),
        "clips.json": json.dumps(clips, indent=2, sort_keys=True),
        "metrics.md": markdown(table),
    }


def write_outputs(out: str, table: Table, results: list[dict], plots: Path, tracker: Any) -> None:
    """The files and plots under ``out``, and in the MLflow run: the files and plots as
    ``evaluation/`` artefacts, the model's metrics as ``<split>/<metric>`` and the baselines'
    as ``baseline/<name>/<split>/<metric>``."""
    for name, text in output_files(table, results).items():
        storage.write_text(storage.join(out, name), text)
        tracker.log_bytes(name, text.encode(), artifact_path="evaluation")
    storage.upload_dir(plots, storage.join(out, "plots"))
    tracker.log_artifact(plots, artifact_path="evaluation/plots")
    tracker.log_metrics({f"{split}/{m}": v for split, row in table[SYSTEM].items()
                         for m, v in row.items() if math.isfinite(v)})
    tracker.log_metrics({f"baseline/{name}/{split}/{m}": v for name, splits in baseline_tables(table).items()
                         for split, row in splits.items() for m, v in row.items() if math.isfinite(v)})


def summary(metrics: dict[str, dict[str, float]], cfg: EvaluateConfig) -> dict[str, Any]:
    """The end summary: per split the headline metrics and the truth's blink-rate interval."""
    out: dict[str, Any] = {
        split: {**{m: row[m] for m in SUMMARY_METRICS},
                "truth_blink_rate_95": [round(row["truth_blink_rate_low"], 3),
                                        round(row["truth_blink_rate_high"], 3)]}
        for split, row in metrics.items()}
    out["blink_reference"] = cfg.blink_reference
    return out
