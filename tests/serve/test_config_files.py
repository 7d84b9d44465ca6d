"""configs/serve.yaml, the generated Serve config file and the RayService manifest agree and validate."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _header_overrides(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    return [part.strip().rstrip(".") for part in first.split("--set")[1:]]


def test_serve_config_file_is_what_the_cli_generates(tmp_path):
    from typer.testing import CliRunner

    from workflows.cli import app

    committed = ROOT / "infra" / "serve-config.yaml"
    out = tmp_path / "serve-config.yaml"
    args = ["serve", "--write-config", str(out), "--port", "8000"]
    for override in _header_overrides(committed):
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_text() == committed.read_text()


def test_serve_config_validates_and_the_rayservice_embeds_it():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "infra" / "serve-config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["import_path"] == "serve.app:build"
    assert {d["name"] for d in app["deployments"]} == {"Ingress", "Portraits", "Animator"}
    service = yaml.safe_load((ROOT / "infra" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == config
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"


def test_builder_takes_serve_run_arguments():
    from serve.app import build

    app = build({"model": "/some/bundle", "generator.num_replicas": "3", "generator.autoscaling": "null"})
    assert app is not None  # bound application; deployment options checked below
    from serve.app import load
    from serve.config import deployment_options

    cfg = load(None, ["generator.autoscaling=null", "generator.num_replicas=3"])
    assert deployment_options(cfg.generator)["num_replicas"] == 3
    assert "autoscaling_config" not in deployment_options(cfg.generator)
