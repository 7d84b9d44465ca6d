"""What a sweep reports: the trial table, the objective figure, the ablation table of
``report.splits`` and the files they are written to (trials.csv, trials.md, objective.png,
report.md, outcome.json)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from tune.config import INFERENCE_KEYS, METRIC, SweepConfig
from tune.scoring import Yardstick, rank_key, split_rows, split_scores
from tune.space import trial_params
from workflows.platform import storage

TABLE_COLUMNS = ["trial", "status", "steps", METRIC, "guidance", "lmd", "blink_rate", "truth_blink_rate",
                 "sync_conf", "truth_sync_conf", "feasible"]
REPORT_METRICS = ("lmd", "blink_rate", "truth_blink_rate", "sync_conf", "truth_sync_conf", "cpbd", "n_clips")
OUTPUTS = ("trials.csv", "trials.md", "objective.png", "outcome.json")  # and report.md with a report


def trial_status(result: Any) -> tuple[str, dict[str, Any]]:
    """(stop reason, last metrics) of a finished Tune trial."""
    metrics = dict(result.metrics or {})
    if result.error is not None:
        return f"error: {str(result.error).strip().splitlines()[-1][:200]}", metrics
    if metrics.get("phase") == "scored":
        return "completed", metrics
    return f"stopped early by ASHA at denoiser step {metrics.get('step', '?')}", metrics


def trial_table(results: list[Any], cfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial: label, params, stop reason, last val_lip_error, objective scores."""
    rows = []
    for result in results:
        reason, m = trial_status(result)
        label, params = trial_params(result.config, cfg.variants)
        row = {"trial": label, **{f"param/{k}": v for k, v in params.items()}, "status": reason,
               "steps": m.get("step"), METRIC: m.get(METRIC, math.nan),
               **{k: m[k] for k in INFERENCE_KEYS if k in m},
               **{k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("objective/")},
               "feasible": m.get("feasible"), "bundle": m.get("bundle"), "mlflow_run_id": m.get("mlflow_run_id")}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "completed",
                                       rank_key({"lmd": r.get("lmd", math.nan),
                                                 "blink_error": r.get("blink_error", math.nan),
                                                 "sync_ratio": r.get("sync_ratio", math.nan)}, cfg.objective)))


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of ``rows`` (numbers to 4 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:.4g}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def objective_figure(rows: list[dict[str, Any]]):
    """The objective (val LMD of completed trials) and the last val_lip_error (every trial) against
    each searched key; stopped trials as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = sorted({k for r in rows for k in r if k.startswith("param/")}) or ["trial"]
    fig = Figure(figsize=(4 * len(keys), 6), layout="constrained")
    axes = fig.subplots(2, len(keys), squeeze=False)
    for j, key in enumerate(keys):
        labels = sorted({str(r.get(key)) for r in rows})
        pos = {v: i for i, v in enumerate(labels)}
        for r in rows:
            x = r.get(key)
            x = float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else pos[str(x)]
            done = r["status"] == "completed"
            axes[0, j].scatter(x, r.get("lmd", math.nan) if done else math.nan, c="tab:blue")
            axes[1, j].scatter(x, r.get(METRIC, math.nan), c="tab:blue" if done else "tab:red",
                               marker="o" if done else "x")
        if not all(isinstance(r.get(key), (int, float)) for r in rows):
            for ax in axes[:, j]:
                ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        axes[0, j].set_ylabel("objective: val LMD (rendered)")
        axes[1, j].set_ylabel(f"last {METRIC} (x: stopped)")
        axes[1, j].set_xlabel(key.removeprefix("param/"))
    return fig


def report_entries(trained: list[dict[str, Any]], cfg: SweepConfig) -> list[tuple[str, str, dict[str, float]]]:
    """(row name, bundle, sampler settings) of every completed trial and every inference variant."""
    entries = [(r["trial"], r["bundle"], {}) for r in trained]
    by_label = {r["trial"]: r for r in trained}
    for name, v in cfg.report.inference_variants.items():
        if v.trial in by_label:
            over = {k: getattr(v, k) for k in INFERENCE_KEYS if getattr(v, k) is not None}
            entries.append((name, by_label[v.trial]["bundle"], over))
    return entries


def report_table(trained: list[dict[str, Any]], cfg: SweepConfig, yardstick: Yardstick) -> list[dict[str, Any]]:
    """The paper's metrics (LMD, blink rate, sync confidence, CPBD) on ``report.splits`` for every
    completed trial and every inference variant."""
    groups = split_rows(yardstick.data, cfg.report.splits, cfg.report.max_clips_per_split)
    rows_all = [r for split in cfg.report.splits for r in groups[split]]
    table = []
    for name, bundle, over in report_entries(trained, cfg):
        _, results = yardstick.score(bundle, rows_all, desc=f"report {name}", **over)
        row: dict[str, Any] = {"system": name}
        for split in cfg.report.splits:
            s = split_scores(results, groups[split])
            row.update({f"{split}/{k}": s[k] for k in REPORT_METRICS})
        table.append(row)
    return table


def write_outputs(out: str, table: list[dict], report: list[dict], outcome: dict) -> None:
    """The trial table (CSV, markdown), the objective figure, the report and the outcome under ``out``."""
    keys = list(dict.fromkeys(k for r in table for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(table)
    storage.write_text(storage.join(out, "trials.csv"), buf.getvalue())
    params = sorted({k for r in table for k in r if k.startswith("param/")})
    storage.write_text(storage.join(out, "trials.md"), markdown_table(table, [TABLE_COLUMNS[0], *params,
                                                                             *TABLE_COLUMNS[1:]]))
    png = io.BytesIO()
    objective_figure(table).savefig(png, format="png", dpi=100)
    storage.write_bytes(storage.join(out, "objective.png"), png.getvalue())
    if report:
        columns = ["system", *[c for c in report[0] if c != "system"]]
        storage.write_text(storage.join(out, "report.md"), markdown_table(report, columns))
    storage.write_text(storage.join(out, "outcome.json"),
                       json.dumps({"outcome": outcome, "report": report}, indent=2, default=str))
