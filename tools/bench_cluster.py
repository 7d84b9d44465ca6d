"""Benchmarks for running at scale: the fit driver's memory, preprocess throughput per node count.

    python tools/bench_cluster.py fit-memory --store workspace/quickstart/store --times 10
    python tools/bench_cluster.py preprocess-nodes --manifest corpus/manifest.jsonl

A developer's tool (not part of the ``disenttalk`` command): it starts its own local clusters and
compares revisions of the code.

``fit-memory`` copies a clip store ``--times`` times over (new content hashes, so they are new
clips) and runs ``fit`` on the original and on the copy, each in a fresh process, sampling the
driver's resident memory; with ``--baseline-ref`` it also runs the driver-side fit of that git
revision for contrast. ``preprocess-nodes`` starts ``infra/local-cluster.py`` with 1 and with
2 worker nodes and times a preprocess job on each (records/s, per-clip seconds). Both print a
table; timings are measurements, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def replicate_store(src: str, dst: str, times: int) -> int:
    """Write ``times`` copies of every clip of the store ``src`` into a new store ``dst`` (copy
    k gets content hash ``sha256(hash + k)`` and clip id ``<id>~k``); returns the clip count."""
    import hashlib

    from workflows.platform import clipstore, storage

    rows = []
    for row in clipstore.read_index(src):
        data = storage.read_bytes(storage.join(src, row["record"]))
        for k in range(times):
            rec = clipstore.ClipRecord.from_bytes(data)
            rec.content_hash = hashlib.sha256(f"{rec.content_hash}{k}".encode()).hexdigest()
            rec.clip_id = f"{rec.clip_id}~{k}"
            rows.append(rec.index_row(clipstore.write_record(dst, rec)))
    clipstore.write_table(storage.join(dst, clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    return len(rows)


PROBE = Path(__file__).with_name("fit_probe.py")  # runs one fit in a fresh process, sampling its RSS


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _probe(fit_module: str | Path, store: str, out: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(PROBE), str(fit_module), store, out], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@app.command("fit-memory")
def fit_memory(
    store: str = typer.Option(..., help="a clip store (e.g. the demo corpus's)"),
    times: int = typer.Option(10, help="how many copies of the store the big corpus holds"),
    work: Path | None = typer.Option(None, help="scratch folder (default: a temp folder)"),
    baseline_ref: str | None = typer.Option(None, help="also run workflows/fit.py of this git revision"),
) -> None:
    """Driver memory of ``fit`` on a store and on ``times`` copies of it."""
    work = work or Path(tempfile.mkdtemp(prefix="bench-fit-"))
    big = str(work / f"store_x{times}")
    if not (Path(big) / "index.parquet").exists():
        tic = time.perf_counter()
        n = replicate_store(store, big, times)
        typer.echo(f"wrote {n} clips to {big} ({time.perf_counter() - tic:.0f} s)")
    variants: dict[str, str | Path] = {"statistics (this tree)": "workflows.fit"}
    if baseline_ref:
        old = work / "fit_baseline.py"
        old.write_text(subprocess.run(["git", "show", f"{baseline_ref}:workflows/fit.py"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
        variants[f"driver-side ({baseline_ref})"] = old
    lines = [f"{'fit':<28}{'corpus':>10}{'clips':>8}{'frames':>9}{'driver base MB':>16}"
             f"{'peak MB':>10}{'growth MB':>11}{'seconds':>9}"]
    for name, module in variants.items():
        for label, path in (("1x", store), (f"{times}x", big)):
            r = _probe(module, path, str(work / f"fit_{_slug(name)}_{label}"))
            lines.append(f"{name:<28}{label:>10}{r['clips']:>8}{r['train_frames']:>9}"
                         f"{r['baseline_mb']:>16.0f}{r['peak_mb']:>10.0f}{r['growth_mb']:>11.0f}"
                         f"{r['seconds']:>9.1f}")
            typer.echo(lines[-1])
    typer.echo("\n" + "\n".join(lines))
    if baseline_ref:
        typer.echo("\n" + compare_fits(*(str(work / f"fit_{_slug(n)}_1x") for n in variants)))


def compare_fits(a: str, b: str) -> str:
    """How far two fit outputs differ: model arrays (max |Δ| relative to the largest entry, axes
    compared up to sign) and the region split."""
    import numpy as np

    from workflows.fit import read_morphable, read_split

    ma, mb = read_morphable(a), read_morphable(b)
    lines = []
    for name in ("mean", "expression_std", "identity_std", "expression_basis", "identity_basis"):
        x, y = getattr(ma, name), getattr(mb, name)
        if name.endswith("basis"):  # an axis and its negation are the same axis
            y = y * np.where(np.sum(x * y, axis=1, keepdims=True) < 0, -1.0, 1.0)
        scale = max(float(np.abs(x).max()), 1e-30)
        lines.append(f"  {name:<18} max |Δ| / max |x| = {float(np.abs(x - y).max()) / scale:.2e}")
    sa, sb = read_split(a), read_split(b)
    same = (sa.lip, sa.eye, sa.global_) == (sb.lip, sb.eye, sb.global_)
    lines.append(f"  region split       {'identical' if same else 'DIFFERENT'} "
                 f"(lip {list(sa.lip)}, eye {list(sa.eye)})")
    return "statistics fit vs driver-side fit on the 1x corpus:\n" + "\n".join(lines)


@app.command("preprocess-nodes")
def preprocess_nodes(
    manifest: Path = typer.Option(..., help="a local corpus manifest (uploaded to the cluster's S3)"),
    nodes: str = typer.Option("1,2", help="worker node counts to try"),
    work: Path | None = typer.Option(None, help="scratch folder (default: a temp folder)"),
    bucket: str = typer.Option("disenttalk", help="bucket of the local cluster's S3 endpoint the corpus is uploaded to"),
) -> None:
    """Preprocess throughput of the same corpus on clusters of 1 and 2 worker nodes (1 CPU each)."""
    from workflows.platform import storage

    work = work or Path(tempfile.mkdtemp(prefix="bench-pre-"))
    script = ROOT / "infra" / "local-cluster.py"
    lines = [f"{'worker nodes':>12}{'clips':>7}{'job s':>8}{'dataset s':>10}{'clips/min':>10}{'clip s':>8}"]
    for count in (int(n) for n in nodes.split(",")):
        folder = work / f"cluster{count}"
        up = subprocess.run([sys.executable, str(script), "up", "--dir", str(folder), "--workers", str(count)],
                            capture_output=True, text=True)
        if up.returncode:
            raise RuntimeError(up.stderr[-3000:])
        env = dict(line[len("export "):].split("=", 1) for line in up.stdout.splitlines()
                   if line.startswith("export "))
        env = {k: v.strip("'") for k, v in env.items()}
        saved = dict(os.environ)
        try:
            os.environ.update({k: v for k, v in env.items() if not k.startswith("RAY_")})
            storage.upload_dir(manifest.parent, f"s3://{bucket}/corpus")
            tic = time.perf_counter()
            job = subprocess.run(
                [sys.executable, "-m", "workflows.platform.submit", "preprocess",
                 "--manifest", f"s3://{bucket}/corpus/manifest.jsonl", "--out", f"s3://{bucket}/store",
                 "--set", f"actors.min_size={count}", "--set", f"actors.max_size={count}",
                 "--set", "ray.progress_bars=false", "--set", "mlflow.enabled=false"],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - tic
            if job.returncode:
                raise RuntimeError(job.stdout[-3000:])
            summary = json.loads(storage.read_text(f"s3://{bucket}/store/summary.json"))
            clips = summary["ok"] + summary["rejected"]
            lines.append(f"{count:>12}{clips:>7}{seconds:>8.1f}{summary['seconds']:>10.1f}"
                         f"{60 * clips / summary['seconds']:>10.1f}{summary['clip_seconds_mean']:>8.2f}")
            typer.echo(lines[-1])
        finally:
            os.environ.clear()
            os.environ.update(saved)
            subprocess.run([sys.executable, str(script), "down", "--dir", str(folder)])
    typer.echo("\n" + "\n".join(lines))


if __name__ == "__main__":
    app()
