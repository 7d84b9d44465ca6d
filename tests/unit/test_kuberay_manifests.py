"""infra/*.yaml KubeRay manifests against the KubeRay v1 CRD schemas, with strict field checking.

The schemas are the operator's published CRDs (``infra/schemas/kuberay-v1-*.json.gz``, the v1
``openAPIV3Schema`` of ray-operator/config/crd/bases, descriptions removed). Strict as
``kubectl apply --validate=strict``: a field the schema does not declare is an error (every
object schema without ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` is
closed), and ``metadata`` is checked against the core ObjectMeta fields a manifest may set.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCHEMAS = INFRA / "schemas"

# core/v1 ObjectMeta: the fields a manifest may set (the rest are written by the API server)
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def strict(schema):
    """A copy of an openAPIV3Schema in which undeclared fields are errors."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def load_schemas() -> dict[str, dict]:
    out = {}
    for path in sorted(SCHEMAS.glob("kuberay-v1-*.json.gz")):
        crd = json.loads(gzip.decompress(path.read_bytes()))
        out[crd["kind"]] = {"apiVersion": f"{crd['group']}/{crd['version']}",
                            "schema": strict(crd["openAPIV3Schema"])}
    return out


SCHEMA = load_schemas()


def manifests() -> list[Path]:
    """Every infra YAML that is a KubeRay object (serve-config / runtime_env are not)."""
    found = []
    for path in sorted(INFRA.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
            found.append(path)
    return found


def errors(doc: dict) -> list[str]:
    kind = doc.get("kind")
    if kind not in SCHEMA:
        return [f"unknown kind {kind!r}"]
    if doc.get("apiVersion") != SCHEMA[kind]["apiVersion"]:
        return [f"apiVersion {doc.get('apiVersion')!r} != {SCHEMA[kind]['apiVersion']}"]
    validator = jsonschema.Draft7Validator(SCHEMA[kind]["schema"])
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_the_schemas_of_every_kuberay_kind_are_vendored():
    assert set(SCHEMA) == {"RayCluster", "RayJob", "RayService"}


def test_there_are_manifests_for_the_pipeline_a_sweep_a_cluster_and_serving():
    kinds = {}
    for path in manifests():
        kinds.setdefault(yaml.safe_load(path.read_text())["kind"], []).append(path.name)
    assert {"rayjob-pipeline.yaml", "rayjob-sweep.yaml"} <= set(kinds["RayJob"])
    assert kinds["RayCluster"] and kinds["RayService"]


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_kuberay_v1(path):
    problems = errors(yaml.safe_load(path.read_text()))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [p for p in manifests() if "rayjob" in p.name], ids=lambda p: p.name)
def test_rayjob_entrypoints_run_modules_of_this_tree(path):
    doc = yaml.safe_load(path.read_text())
    words = doc["spec"]["entrypoint"].split()
    modules = [words[i + 1] for i, w in enumerate(words) if w == "-m"]
    assert modules
    for module in modules:
        parts = module.split(".")
        assert (ROOT.joinpath(*parts).with_suffix(".py").exists()
                or (ROOT.joinpath(*parts) / "__main__.py").exists()
                or module == "tune.sweep"), module  # tune.sweep: the sweep module, in tune/


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["spec"].update(entrypiont="x"), "entrypiont"),  # misspelt field
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .update(imagePullPolicyy="Always"), "imagePullPolicyy"),  # unknown field deep in a pod
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "rayStartParams"),  # rayStartParams values are strings
    (lambda d: d["metadata"].update(name="Not_A_Name"), "metadata"),
    (lambda d: d["spec"]["rayClusterSpec"].update(authOptions={"mode": "password"}), "authOptions"),
])
def test_strict_validation_rejects_what_kubernetes_would(mutate, where):
    doc = yaml.safe_load((INFRA / "rayjob-pipeline.yaml").read_text())
    mutate(doc)
    problems = errors(doc)
    assert problems and any(where in p for p in problems), problems


def test_the_ingress_fronts_the_rayservice_and_caps_bodies_at_the_uploads_limit():
    """infra/ingress.yaml: nginx buffers a body and caps it before Serve's proxy reads any (two
    files of limits.max_upload_mb and a megabyte of fields), on KubeRay's serve service."""
    from serve.app import load

    ingress = yaml.safe_load((INFRA / "ingress.yaml").read_text())
    service = yaml.safe_load((INFRA / "rayservice.yaml").read_text())
    cfg = load(None, [])
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{2 * round(cfg.limits.max_upload_mb) + 1}m"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > cfg.stream.max_session_s
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == f"{service['metadata']['name']}-serve-svc"  # KubeRay's naming
    assert backend["port"]["number"] == 8000 == yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]


def test_every_rayservice_node_gets_the_ray_settings_and_the_proxys_body_cap_of_disenttalk_serve():
    """The RayService's pods set what ``disenttalk serve`` gives a local cluster (every process
    reads these from its own environment): Ray's inline object size (``ray.inline_object_kb``),
    its metrics switch (``ray.metrics``) and the body cap of Serve's HTTP proxy (``serve.upload.ProxyBodyCap``)."""
    from serve.app import load
    from serve.upload import PROXY_CALLBACK, PROXY_CALLBACK_ENV, PROXY_LIMIT_ENV, proxy_body_limit

    service = yaml.safe_load((INFRA / "rayservice.yaml").read_text())
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    cfg = load(None, [])
    want = {"RAY_max_direct_call_object_size": str(cfg.ray.inline_object_kb * 1024),
            "RAY_enable_metrics_collection": str(int(cfg.ray.metrics)),
            PROXY_CALLBACK_ENV: PROXY_CALLBACK,
            PROXY_LIMIT_ENV: str(proxy_body_limit(cfg.limits.max_upload_mb))}
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert {k: env.get(k) for k in want} == want, container["name"]
