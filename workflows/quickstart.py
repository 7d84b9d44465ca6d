"""``disenttalk quickstart`` (``make demo``): the whole main job on the demo corpus, end to end.

demo-data → preprocess → fit → train → tune-sampler → evaluate → register → generate, on one
local Ray cluster, every stage tracked in MLflow. Outputs go to ``<workspace>/quickstart/``; the run ends
with a one-screen summary and ``summary.json`` (video, tracking URI, model URI, metrics and
baselines per split).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import Field

from disenttalk import paths
from disenttalk.config import StrictConfig
from disenttalk.constants import CHAMPION_URI, DEFAULT_STEPS
from workflows.common import user_errors
from workflows.platform import storage


class CorpusSection(StrictConfig):
    """Size and seed of the demo corpus."""

    clips_per_language: int = Field(20, gt=0)
    languages: tuple[str, ...] = ("en", "zh")
    xling_language: str = "es"
    xling_clips: int = Field(8, ge=0)
    voice_clips: int = Field(10, ge=0)  # test_voice: held-out voices (disenttalk.synth.corpus)
    training_engines: tuple[str, ...] | None = None  # None: every installed engine's training voices
    speakers: int = Field(8, gt=0)
    sentences: Literal["default", "large"] = "default"  # the sentence bank (disenttalk.synth.sentences)
    seed: int = 0


class SampleSection(StrictConfig):
    """Which held-out clip's speech the sample video says, and how it is sampled."""

    split: str = "test"
    language: str = "en"
    steps: int = Field(DEFAULT_STEPS, gt=0)
    seed: int = 0


class StageOverrides(StrictConfig):
    """``--set`` overrides applied on top of each stage's own YAML."""

    preprocess: tuple[str, ...] = ()
    fit: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    tune_sampler: tuple[str, ...] = ()
    evaluate: tuple[str, ...] = ()


class QuickstartConfig(StrictConfig):
    """Config of ``disenttalk quickstart`` (``configs/quickstart.yaml``)."""

    corpus: CorpusSection = CorpusSection()
    sample: SampleSection = SampleSection()
    overrides: StageOverrides = StageOverrides()
    curve: bool = False  # score every kept checkpoint on val after training (`disenttalk curve`)
    champion_metric: str = "test/lmd"


def _stage(name: str, fn, *args, **kwargs) -> tuple[Any, float]:
    typer.secho(f"\n▶ {name}", bold=True)
    tic = time.perf_counter()
    result = fn(*args, **kwargs)
    elapsed = time.perf_counter() - tic
    typer.secho(f"✓ {name} ({elapsed:.0f} s)", fg="green")
    return result, elapsed


def _sample_clip(corpus: Path, split: str, language: str) -> dict[str, Any]:
    """The first manifest clip of ``split`` in ``language`` (any language if none)."""
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    pool = [r for r in rows if r["split"] == split] or rows
    chosen = [r for r in pool if r["language"] == language] or pool
    return sorted(chosen, key=lambda r: r["clip_id"])[0]


def _corpus_complete(corpus: Path, cfg: CorpusSection) -> bool:
    """Whether ``corpus`` already holds the corpus this config describes (re-runs skip it)."""
    stamp, manifest = corpus / "quickstart-corpus.json", corpus / "manifest.jsonl"
    if not (stamp.exists() and stamp.read_text() == cfg.to_json() and manifest.exists()):
        return False
    first = manifest.read_text(encoding="utf-8").split("\n", 1)[0]
    return "portrait" in json.loads(first or "{}")  # corpora from before manifests named portraits


@dataclass(frozen=True)
class Layout:
    """Where each stage's outputs go under the quickstart's root folder."""

    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def fit(self) -> Path:
        return self.root / "fit"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"


def _demo_data(cfg: CorpusSection, corpus: Path, times: dict[str, float]) -> None:
    """Build the demo corpus unless ``corpus`` already holds this config's."""
    from disenttalk.synth.clips import build_corpus

    if _corpus_complete(corpus, cfg):
        typer.echo(f"demo corpus: reusing {corpus}")
        return
    _, times["demo-data"] = _stage(
        "demo-data", build_corpus, corpus, languages=list(cfg.languages),
        clips_per_language=cfg.clips_per_language, seed=cfg.seed, portrait=None,
        xling_language=cfg.xling_language or None, workers=2, num_speakers=cfg.speakers,
        xling_clips=cfg.xling_clips, sentence_bank=cfg.sentences, voice_clips=cfg.voice_clips,
        training_engines=cfg.training_engines,
    )
    (corpus / "quickstart-corpus.json").write_text(cfg.to_json())


def _ray_stages(cfg: QuickstartConfig, at: Layout, times: dict[str, float]) -> dict[str, Any]:
    """preprocess → fit → train (→ curve) → tune-sampler → evaluate on one local Ray cluster;
    returns the bundle, the learning curve's points and the evaluate config."""
    from tune import sampler as tune_sampler
    from workflows import evaluate, fit, preprocess, train
    from workflows.common import load_config
    from workflows.curve import learning_curve
    from workflows.platform.raycluster import RayConfig, init_ray, shutdown_if_started
    from workflows.preprocess.worker import PreprocessConfig

    o, points = cfg.overrides, None
    started = init_ray(RayConfig())  # one local cluster for every stage
    try:
        _, times["preprocess"] = _stage(
            "preprocess", preprocess.run, str(at.corpus / "manifest.jsonl"), str(at.store),
            load_config(PreprocessConfig, "preprocess", None, o.preprocess))
        _, times["fit"] = _stage(
            "fit", fit.run, str(at.store), str(at.fit), load_config(fit.FitConfig, "fit", None, o.fit))
        # A quickstart trains from scratch each time (a kept run would resume its checkpoints).
        shutil.rmtree(at.train, ignore_errors=True)
        trained, times["train"] = _stage(
            "train", train.run, str(at.store), str(at.fit), str(at.train),
            train.load_stage_config(None, o.train))
        bundle = str(trained["bundle"])
        if cfg.curve:
            points, times["curve"] = _stage("curve", learning_curve, str(at.train), str(at.store))
        _, times["tune-sampler"] = _stage(
            "tune-sampler", tune_sampler.run,
            load_config(tune_sampler.SamplerSearchConfig, "tune_sampler", None, o.tune_sampler),
            bundle, str(at.store), str(at.corpus))
        eval_cfg = load_config(evaluate.EvaluateConfig, "evaluate", None, o.evaluate)
        _, times["evaluate"] = _stage(
            "evaluate", evaluate.run, eval_cfg, bundle, str(at.store), str(at.evaluate), str(at.corpus))
    finally:
        shutdown_if_started(started)
    return {"bundle": bundle, "points": points, "eval_cfg": eval_cfg}


def _sample_video(cfg: SampleSection, at: Layout, times: dict[str, float]) -> tuple[dict[str, Any], Path]:
    """The champion saying a held-out clip's speech on scikit-image's astronaut: (clip, video)."""
    from skimage import data as skdata
    from skimage import io

    from workflows import generate

    clip = _sample_clip(at.corpus, cfg.split, cfg.language)
    portrait = at.root / "portrait.png"
    io.imsave(str(portrait), skdata.astronaut(), check_contrast=False)
    video = at.root / "sample.mp4"
    _, times["generate"] = _stage(
        "generate", generate.run, CHAMPION_URI, str(at.corpus / clip["path"]), str(portrait),
        str(video), steps=cfg.steps, seed=cfg.seed)
    return clip, video


def run(cfg: QuickstartConfig, root: Path) -> dict[str, Any]:
    """Run every stage under ``root``; returns the summary written to ``root/summary.json``."""
    from workflows import register
    from workflows.platform import tracking

    root.mkdir(parents=True, exist_ok=True)
    at, times = Layout(root), {}
    _demo_data(cfg.corpus, at.corpus, times)
    staged = _ray_stages(cfg, at, times)
    metrics = json.loads((at.evaluate / "metrics.json").read_text())
    baselines = json.loads((at.evaluate / "baselines.json").read_text())
    registered, times["register"] = _stage(
        "register", register.register, staged["bundle"], metrics, metric=cfg.champion_metric,
        mode="min")
    clip, video = _sample_video(cfg.sample, at, times)
    summary = {
        "video": str(video),
        "sample_sentence": clip.get("sentence"),
        "sample_language": clip.get("language"),
        "tracking_uri": tracking.tracking_uri(),
        "model_uri": CHAMPION_URI,
        "model_version": registered["version"],
        "champion": registered["champion"],
        "bundle": staged["bundle"],
        "metrics_table": str(at.evaluate / "metrics.md"),
        "metrics": metrics,
        # where the model's blink rate came from
        "blink_reference": staged["eval_cfg"].blink_reference,
        "baselines": baselines,
        "stage_seconds": {k: round(v, 1) for k, v in times.items()},
        **({"learning_curve": str(at.train / "curve" / "curve.png"), "curve": staged["points"]}
           if cfg.curve else {}),
        "mlflow_ui": f"mlflow ui --backend-store-uri {tracking.tracking_uri()} --port 5000",
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _headline(summary: dict[str, Any]) -> str:
    """A short table: model vs baselines on LMD and blink rate per split."""
    keys = ("lmd", "gap_closed", "blink_rate", "blink_duration", "landmark_change", "sync_conf")
    lines = [f"{'split':<12}{'system':<10}" + "".join(f"{k:>16}" for k in keys)]
    systems = {"model": summary["metrics"], **summary["baselines"]}
    splits = [s for s in summary["metrics"] if s.count("/") <= 1]  # splits and test/<language>
    for split in splits:
        for name, table in systems.items():
            row = table.get(split, {})
            cells = "".join(f"{row.get(k, float('nan')):>16.4f}" for k in keys)
            lines.append(f"{split:<12}{name:<10}{cells}")
    # few blinks measure a split's rate loosely: say how loosely, beside the model's rate
    lines.append("truth blinks per split, and the 95 % interval of the rate they measure:")
    for split in splits:
        row = summary["metrics"][split]
        if row.get("truth_seconds"):
            lines.append(f"  {split:<12}{row['truth_blinks']:>4.0f} in {row['truth_seconds']:5.1f} s → "
                         f"{row['truth_blink_rate_low']:.2f}–{row['truth_blink_rate_high']:.2f} /s "
                         f"(model {row['blink_rate']:.2f})")
    voices = [s for s in summary["metrics"] if s.count("/") > 1]  # <split>/<engine>/<voice>
    if voices:
        lines.append("per voice (model): gap_closed, mouth opening p95 (truth's), in pauses (truth's):")
        truth = summary["baselines"].get("truth", {})
        for split in voices:
            row, true = summary["metrics"][split], truth.get(split, {})
            lines.append(f"  {split:<42}{row.get('gap_closed', float('nan')):>7.2f}"
                         f"{row.get('mouth_p95', float('nan')):>8.3f} ({true.get('mouth_p95', float('nan')):.3f})"
                         f"{row.get('mouth_pause', float('nan')):>8.3f} ({true.get('mouth_pause', float('nan')):.3f})")
    return "\n".join(lines)


def preset_path(preset: str) -> Path | None:
    """``configs/quickstart.yaml`` for the ``demo`` preset, ``configs/quickstart_<preset>.yaml`` otherwise."""
    from workflows.common import default_config_path

    if preset == "demo":
        return None  # load_config's default: configs/quickstart.yaml
    path = default_config_path(f"quickstart_{preset}")
    if not path.exists():
        known = sorted(p.stem.removeprefix("quickstart_") for p in path.parent.glob("quickstart_*.yaml"))
        raise typer.BadParameter(f"unknown preset {preset!r}; known: demo, {', '.join(known)}")
    return path


@user_errors("quickstart")
def cli(
    config: Path | None = typer.Option(None, help="YAML config (default configs/quickstart.yaml)"),
    preset: str = typer.Option("demo", help="demo (≈20 min on 2 cores) | long (the best model in "
                                            "≤ 2 h: more data, a longer schedule)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. corpus.clips_per_language=10"),
    out: Path | None = typer.Option(None, help="output folder (default <workspace>/quickstart, "
                                               "or quickstart-<preset>)"),
    verbose: bool = typer.Option(False, help="also show native libraries' log chatter (MediaPipe)"),
) -> None:
    """Run the whole job on the demo corpus: data, training, evaluation, registry, a sample video."""
    from disenttalk.face.tracker import VERBOSE_ENV
    from workflows.common import load_config

    if verbose:  # read where the stages run: the trackers' native logs, Ray Train's log level
        os.environ[VERBOSE_ENV] = "1"

    cfg = load_config(QuickstartConfig, "quickstart", config or preset_path(preset), set_)
    default = paths.home() / ("quickstart" if preset == "demo" else f"quickstart-{preset}")
    root = storage.local_path(out, "--out") if out else default
    tic = time.perf_counter()
    summary = run(cfg, root)
    typer.echo("\n" + _headline(summary))
    typer.secho(f"\nDone in {(time.perf_counter() - tic) / 60:.1f} min.", bold=True)
    typer.echo(f"  video:          {summary['video']}  ({summary['sample_language']}: {summary['sample_sentence']})")
    typer.echo(f"  metrics table:  {summary['metrics_table']}")
    typer.echo(f"  model:          {summary['model_uri']} (version {summary['model_version']})")
    typer.echo(f"  summary:        {root / 'summary.json'}")
    typer.echo(f"  MLflow UI:      {summary['mlflow_ui']}")


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.quickstart
    typer.run(cli)
