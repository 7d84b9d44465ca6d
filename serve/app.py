"""The Ray Serve application: ``build`` for ``serve run/build/deploy``, ``disenttalk serve`` locally.

``serve run serve.app:build model_uri=models:/disenttalk@champion generator.num_replicas=2``:
every argument is a ``configs/serve.yaml`` key (``config=PATH`` picks another file).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

APP_NAME = "disenttalk"
IMPORT_PATH = "serve.app:build"


def load(config: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """``configs/serve.yaml`` (or ``config``) with ``key=value`` overrides."""
    from serve.config import ServeConfig
    from workflows.common import load_config

    return load_config(ServeConfig, "serve", config, overrides or [])


def build_app(cfg: Any, api_key_sha256: str | None = None) -> Any:
    """The bound application: Ingress → (Portraits, Animator).

    ``api_key_sha256``: the API key's digest (default: of ``DISENTTALK_API_KEY`` in this
    process's environment, :mod:`serve.keys`); only the digest reaches Ray.
    """
    from serve.config import deployment_options
    from serve.deployments import Animator, Ingress, Portraits
    from serve.keys import configured_digest
    from workflows.platform.raycluster import worker_env

    api_key_sha256 = api_key_sha256 or configured_digest()
    # Replicas get this process's MLflow / S3 / workspace settings whatever environment the Ray
    # cluster was started with (never the API key: runtime_env is shown in Ray's tables).
    env = worker_env()

    def options(section: Any, **extra: Any) -> dict[str, Any]:
        opts = {**deployment_options(section), **extra,
                "graceful_shutdown_timeout_s": cfg.shutdown_grace_s}
        if env:
            opts["ray_actor_options"]["runtime_env"] = {"env_vars": dict(env)}
        return opts

    data = cfg.to_dict()
    portraits = Portraits.options(**options(cfg.portraits)).bind(data)
    animator = Animator.options(**options(cfg.generator, user_config={"model_uri": cfg.model_uri})).bind(data)
    return Ingress.options(**options(cfg.ingress)).bind(portraits, animator, data, api_key_sha256)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def build(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run serve.app:build key=value ...``.

    ``require_api_key=true`` (what ``--write-config`` writes: the config binds every address)
    refuses to build without ``DISENTTALK_API_KEY`` in the environment of the process building it.
    """
    from serve.keys import API_KEY_ENV, configured_digest

    args = dict(args or {})
    config = args.pop("config", None)
    required = _flag(args.pop("require_api_key", False))
    if "model" in args:
        args["model_uri"] = args.pop("model")
    overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    key = configured_digest()
    if required and key is None:
        raise ValueError(f"require_api_key is set (the app listens on every address) but {API_KEY_ENV} "
                         "is not set where the app is built: set it on the Ray nodes (Kubernetes: "
                         "from a Secret, see infra/rayservice.yaml)")
    return build_app(load(config, overrides), key)


def serve_config(cfg: Any, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Serve config file (``serve deploy``, RayService ``serveConfigV2``) of ``cfg``."""
    from serve.config import deployment_options

    def deployment(name: str, opts: Any, **extra: Any) -> dict[str, Any]:
        return {"name": name, **deployment_options(opts), **extra,
                "graceful_shutdown_timeout_s": cfg.shutdown_grace_s}

    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cfg.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": cfg.route_prefix,
            "import_path": IMPORT_PATH,
            "args": dict(args or {"model_uri": cfg.model_uri}),
            "deployments": [
                deployment("Ingress", cfg.ingress),
                deployment("Portraits", cfg.portraits),
                deployment("Animator", cfg.generator, user_config={"model_uri": cfg.model_uri}),
            ],
        }],
    }


def start(cfg: Any, host: str, port: int, api_key_sha256: str | None = None) -> str:
    """Start Serve on ``host:port`` in the connected Ray cluster and run the app; its URL."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg, api_key_sha256), name=APP_NAME, route_prefix=cfg.route_prefix)
    return f"http://{host}:{port}{cfg.route_prefix}"


def write_config(path: Path, cfg: Any, port: int, overrides: list[str], extra: list[str],
                 insecure: bool) -> None:
    """``--write-config``: the Serve config file for ``serve deploy`` / a RayService. It binds
    every address, so it requires an API key where the app is built, unless ``insecure``."""
    import yaml

    header = ("# Generated by `disenttalk serve --write-config` from configs/serve.yaml"
              + (f" with --set {' --set '.join(overrides)}" if overrides else "") + ".\n"
              "# Deploy: serve deploy this-file.yaml (RAY_ADDRESS / --address of the cluster).\n")
    if insecure:
        header += ("# WARNING: written with --insecure: it listens on every address (0.0.0.0) and\n"
                   "# requires no API key: anyone who reaches the port can use the API.\n")
    else:
        header += ("# It listens on every address (0.0.0.0), so require_api_key: the app refuses to\n"
                   "# build unless DISENTTALK_API_KEY is set (non-empty) on the Ray nodes; on\n"
                   "# Kubernetes from a Secret (infra/rayservice.yaml). Only its SHA-256 reaches Ray.\n")
    args = dict(o.split("=", 1) for o in [*overrides, *extra])
    args.setdefault("model_uri", cfg.model_uri)
    if not insecure:
        args["require_api_key"] = "true"
    path.write_text(header + yaml.safe_dump(serve_config(cfg.model_copy(update={"port": port}), args),
                                            sort_keys=False))


def _refuse(message: str) -> None:
    typer.echo(f"disenttalk serve: {message}", err=True)
    raise typer.Exit(2)


def exposure_check(host: str, insecure: bool) -> str | None:
    """The API key's digest, after refusing what would expose the API: an empty
    ``DISENTTALK_API_KEY``, or a non-loopback ``host`` without a key unless ``insecure``."""
    from serve.keys import API_KEY_ENV, MIN_KEY_CHARS, ApiKeyError, configured_digest, is_loopback

    try:
        key = configured_digest()
    except ApiKeyError as exc:
        _refuse(str(exc))
    if key is None and not is_loopback(host):
        if not insecure:
            _refuse(f"refusing to listen on {host} without an API key: anyone who can reach it could "
                    f"use the API. Set {API_KEY_ENV} (e.g. openssl rand -hex 32), listen on 127.0.0.1, "
                    "or pass --insecure to serve without a key anyway.")
        typer.echo(f"disenttalk serve: WARNING: listening on {host} with no API key (--insecure)", err=True)
    if key is not None and len(os.environ[API_KEY_ENV]) < MIN_KEY_CHARS:
        typer.echo(f"disenttalk serve: WARNING: {API_KEY_ENV} is shorter than {MIN_KEY_CHARS} "
                   "characters; use a random key (openssl rand -hex 32)", err=True)
    return key


def cap_proxy_bodies(cfg: Any) -> None:
    """Have Serve's HTTP proxy stop reading a request body past the largest any route takes
    (:class:`serve.upload.ProxyBodyCap`): set in this process's environment, which a Ray
    cluster started from here hands to its processes (a cluster started elsewhere needs the two
    variables in its nodes' environment, as ``infra/rayservice.yaml`` sets them)."""
    from serve.upload import PROXY_CALLBACK, PROXY_CALLBACK_ENV, PROXY_LIMIT_ENV, proxy_body_limit

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    os.environ[PROXY_LIMIT_ENV] = str(proxy_body_limit(cfg.limits.max_upload_mb))


def run_until_stopped(cfg: Any, host: str, port: int, api_key_sha256: str | None) -> None:
    """Start Ray (unless connected) and the app; serve until SIGTERM or Ctrl-C; then drain and
    stop everything started here (:func:`serve.shutdown.stop`) and exit 0 (the process ends here:
    the interpreter's own teardown of Ray's core worker would take seconds more)."""
    import ray

    from serve.shutdown import catch_stop_signals, stop
    from workflows.platform.raycluster import init_ray

    started = False
    catch_stop_signals()
    cap_proxy_bodies(cfg)
    try:
        started = init_ray(cfg.ray)
        catch_stop_signals()  # ray.init installed its own SIGTERM handler (an abrupt exit)
        url = start(cfg, host, port, api_key_sha256)
        typer.echo(f"DisentTalk is serving {cfg.model_uri} at {url}  (page: {url}, API: "
                   f"{url.rstrip('/')}/v1/..., docs: {url.rstrip('/')}/docs). Ctrl-C stops it.")
        if started:
            auth = " RAY_AUTH_MODE=token" if os.environ.get("RAY_AUTH_MODE") == "token" else ""
            typer.echo(f"Ray cluster: RAY_ADDRESS={ray.get_runtime_context().gcs_address}{auth} "
                       "(for disenttalk bench soak --chaos)")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop(APP_NAME, cfg.shutdown_grace_s, started)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cli(
    host: str | None = typer.Option(None, help="Address to listen on (default from the config: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="HTTP port (default from the config: 8000)."),
    model: str | None = typer.Option(None, help="Model URI (default models:/disenttalk@champion) or a bundle dir."),
    config: Path | None = typer.Option(None, "--config", help="YAML (default configs/serve.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="key=value override, repeatable."),
    write_config_to: Path | None = typer.Option(None, "--write-config",
                                                help="Write the Serve config file for `serve deploy` and exit."),
    insecure: bool = typer.Option(False, help="Serve on a non-loopback address without an API key "
                                  "(refused otherwise); --write-config: drop require_api_key."),
) -> None:
    """Serve the model over HTTP + WebSocket with Ray Serve (SIGTERM or Ctrl-C drains and stops it).

    The API key is DISENTTALK_API_KEY; without one only loopback addresses are served.
    """
    from serve.config import ServeConfig
    from serve.keys import API_KEY_ENV

    extra = [f"model_uri={model}"] if model else []
    cfg: ServeConfig = load(config, [*overrides, *extra])
    host, port = host or cfg.host, port or cfg.port
    if write_config_to is not None:
        write_config(write_config_to, cfg, port, overrides, extra, insecure)
        typer.echo(str(write_config_to))
        return
    key = exposure_check(host, insecure)
    os.environ.pop(API_KEY_ENV, None)  # the local Ray processes started next inherit no key
    run_until_stopped(cfg, host, port, key)


def __getattr__(name: str) -> Any:
    """``serve.app:app``, the default application, built on first access (``serve build`` needs one)."""
    if name == "app":
        return build({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
