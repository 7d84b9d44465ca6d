"""``disenttalk demo-data``: write the synthetic demo corpus (speech, video, truth, manifest).

The corpus runs the whole system in minutes with known truth; see ``disenttalk.synth.corpus``
for the layout and how the splits are made. ``--verify`` re-tracks every clip and prints how
well the rendered mouth and blinks follow the truth.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from workflows.common import user_errors
from workflows.platform import storage


def _print_summary(summary: dict) -> None:
    typer.echo(f"clips: {summary['clips']}  hours: {summary['hours']:.4f}  "
               f"speakers: {summary['speakers']}  time: {summary['seconds']} s")
    for split, langs in summary["splits"].items():
        cells = "  ".join(f"{lang}: {c['clips']} clips / {c['hours'] * 60:.1f} min"
                          for lang, c in sorted(langs.items()))
        typer.echo(f"  {split:<11} {cells}")


@user_errors("demo-data")
def demo_data(
    out: str = typer.Option(..., "--out", help="Folder or s3:// prefix to write the corpus into "
                            "(an s3:// corpus is built in a local temporary folder, then uploaded)."),
    clips_per_language: int = typer.Option(20, help="Clips per training language (split 60/20/20)."),
    languages: str = typer.Option("en,zh", help="Comma-separated training languages (ISO 639-1)."),
    seed: int = typer.Option(0, help="Seed of every random draw: same seed, same corpus."),
    portrait: Path | None = typer.Option(None, help="Portrait photo (default: scikit-image astronaut)."),
    xling_language: str = typer.Option("es", help="Language of the test_xling split ('' for none)."),
    xling_clips: int | None = typer.Option(None, help="test_xling clips (default: half of --clips-per-language)."),
    voice_clips: int = typer.Option(10, help="test_voice clips: English test sentences spoken by "
                                    "held-out voices (flite, Piper, festival's HTS voice); 0 for none."),
    engines: str = typer.Option("", help="Comma-separated speech engines to use (espeak, festival, "
                                "flite, piper); default: every one installed."),
    training_engines: str = typer.Option("", help="Only these engines speak train/val/test (an "
                                         "ablation, e.g. 'espeak'); test_voice keeps its voices."),
    speakers: int = typer.Option(8, help="Number of synthetic speakers (split 60/15/25 %)."),
    sentences: str = typer.Option("default", help="Sentence bank: default | large (twice the "
                                  "English and Mandarin sentences)."),
    workers: int = typer.Option(2, help="Rendering processes."),
    verify: bool = typer.Option(False, help="Re-track every clip and score mouth and blinks."),
) -> None:
    """Write the demo corpus: mp4 + truth npz per clip and DIR/manifest.jsonl."""
    from disenttalk.synth.clips import build_corpus

    if portrait is not None:
        portrait = storage.local_path(portrait, "--portrait")
    with _local_folder(out) as folder:
        summary = _build(build_corpus, folder, languages, engines, training_engines, clips_per_language=clips_per_language,
                         seed=seed, portrait=str(portrait) if portrait else None,
                         xling_language=xling_language or None, workers=workers, num_speakers=speakers,
                         xling_clips=xling_clips, sentence_bank=sentences, voice_clips=voice_clips)
        _print_summary(summary)
        if verify:
            _verify(folder)
    if storage.is_s3(out):
        typer.echo(f"uploaded to {out}")


def _build(build_corpus, folder: Path, languages: str, engines: str, training_engines: str, **options) -> dict:
    langs = [x.strip() for x in languages.split(",") if x.strip()]
    chosen = [x.strip() for x in engines.split(",") if x.strip()] or None
    training = [x.strip() for x in training_engines.split(",") if x.strip()] or None
    return build_corpus(folder, languages=langs, engines=chosen, training_engines=training, **options)


def _verify(folder: Path) -> None:
    from disenttalk.synth.check import score_corpus

    scores = score_corpus(folder)
    per_clip = scores.pop("per_clip")
    (folder / "verify.json").write_text(json.dumps({**scores, "per_clip": per_clip}, indent=2))
    typer.echo(json.dumps(scores))


@contextmanager
def _local_folder(out: str) -> Iterator[Path]:
    """The folder the corpus is written into: ``out`` itself, or for an ``s3://`` prefix a
    temporary folder uploaded there once the corpus is complete (nothing is uploaded if the
    build fails)."""
    if not storage.is_s3(out):
        yield storage.local_path(out, "--out")
        return
    with tempfile.TemporaryDirectory(prefix="demo-data-") as tmp:
        yield Path(tmp)
        storage.ensure_bucket(out)
        storage.upload_dir(tmp, out)


if __name__ == "__main__":  # python -m workflows.demo_data ...
    typer.run(demo_data)
