"""The ``disenttalk`` command line: the user's front door to every stage.

Each stage lives in its own module and is registered here; heavy imports happen inside the
commands, so ``disenttalk --help`` stays fast.
"""

from __future__ import annotations

import typer

from serve import app as serve_app
from tune import sampler as tune_sampler
from tune import sweep
from workflows import (
    bench,
    bench_cluster,
    curve,
    demo_data,
    evaluate,
    fit,
    generate,
    inspect,
    manifest,
    pipeline,
    preprocess,
    quickstart,
    register,
    train,
)
from workflows.platform import submit

app = typer.Typer(
    name="disenttalk",
    help="Cross-lingual talking-face generation: data, training, evaluation and generation on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench.app, name="bench")
app.add_typer(bench_cluster.app, name="bench-cluster", help="Cluster benchmarks: fit driver memory, preprocess on 1 vs 2 nodes.")

# Stage commands are registered below, one line each.
app.command("inspect")(inspect.inspect)
app.command("manifest")(manifest.cli)
app.command("preprocess")(preprocess.cli)
app.command("fit")(fit.cli)
app.command("train")(train.cli)
app.command("demo-data")(demo_data.demo_data)
app.command("tune-sampler")(tune_sampler.cli)
app.command("sweep")(sweep.cli)
app.command("evaluate")(evaluate.evaluate)
app.command("curve")(curve.cli)
app.command("register")(register.cli)
app.command("generate")(generate.cli)
app.command("quickstart")(quickstart.cli)
app.command("pipeline")(pipeline.cli)
app.command("submit", context_settings=submit.CONTEXT)(submit.cli)
app.command("serve")(serve_app.cli)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
