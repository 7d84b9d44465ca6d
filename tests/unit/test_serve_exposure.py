"""Exposure of ``disenttalk serve`` (no Ray): no key on a non-loopback address is refused before
Ray starts, an empty key is an error, only the key's SHA-256 reaches the Ingress, the generated
Serve config requires a key; and the ingress's drain (serve.shutdown) on an ASGI app."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import yaml
from fastapi import WebSocket, WebSocketDisconnect
from typer.testing import CliRunner

from serve import keys


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if anything tries to start Ray; records what would have been served."""
    import serve.app
    import workflows.platform.raycluster

    served = []
    monkeypatch.setattr(workflows.platform.raycluster, "init_ray",
                        lambda *_: pytest.fail("Ray was started"))
    monkeypatch.setattr(serve.app, "run_until_stopped",
                        lambda cfg, host, port, key: served.append((host, key, dict(__import__("os").environ))))
    return served


def serve_cli(*args: str, key: str | None = None):
    from workflows.cli import app

    return CliRunner().invoke(app, ["serve", *args], env={keys.API_KEY_ENV: key})


def test_a_non_loopback_host_without_a_key_is_refused_before_ray(no_ray):
    for host in ("0.0.0.0", "::", "192.0.2.7", "my-host.example"):
        result = serve_cli("--host", host)
        assert result.exit_code == 2, result.output
        assert "refusing to listen on" in result.output and keys.API_KEY_ENV in result.output
        assert "--insecure" in result.output
    assert no_ray == []


def test_an_empty_key_is_an_error_not_auth_off(no_ray):
    for key in ("", "   "):
        result = serve_cli(key=key)
        assert result.exit_code == 2 and "set but empty" in result.output, result.output
    assert no_ray == []
    with pytest.raises(keys.ApiKeyError):
        keys.configured_digest({keys.API_KEY_ENV: ""})


def test_loopback_serves_without_a_key_and_insecure_is_explicit(no_ray):
    assert serve_cli().exit_code == 0  # 127.0.0.1 from the config
    assert serve_cli("--host", "localhost").exit_code == 0
    insecure = serve_cli("--host", "0.0.0.0", "--insecure")
    assert insecure.exit_code == 0 and "WARNING" in insecure.output
    assert [(host, key) for host, key, _ in no_ray] == [("127.0.0.1", None), ("localhost", None), ("0.0.0.0", None)]


def test_only_the_keys_digest_goes_on_and_the_environment_loses_the_key(no_ray):
    key = "k" * 40
    result = serve_cli("--host", "0.0.0.0", key=key)
    assert result.exit_code == 0, result.output
    [(_, digest, env)] = no_ray
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert keys.API_KEY_ENV not in env  # the local Ray processes would inherit it
    assert "shorter than" in serve_cli(key="short").output  # a warning, not a refusal


def test_key_matching_and_loopback_addresses():
    digest = keys.digest("s3cret-key")
    assert keys.matches("s3cret-key", digest)
    assert not keys.matches("s3cret-kez", digest) and not keys.matches(None, digest)
    assert not keys.matches("s3cret-key", None)
    assert all(map(keys.is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST."]))
    assert not any(map(keys.is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


def test_the_builder_hands_the_ingress_a_digest_never_the_key(monkeypatch):
    from serve.app import build

    monkeypatch.setenv(keys.API_KEY_ENV, "the-key-itself-0123456789")
    app = build({"model": "/some/bundle"})
    ingress = app._bound_deployment
    assert ingress.init_args[-1] == keys.digest("the-key-itself-0123456789")
    assert "the-key-itself" not in repr(ingress.ray_actor_options)
    assert ingress._deployment_config.graceful_shutdown_timeout_s == 20.0
    monkeypatch.delenv(keys.API_KEY_ENV)
    with pytest.raises(ValueError, match="require_api_key"):
        build({"model": "/some/bundle", "require_api_key": "true"})
    assert build({"model": "/some/bundle"})._bound_deployment.init_args[-1] is None  # loopback use


def test_the_written_serve_config_requires_a_key_unless_insecure(tmp_path):
    from workflows.cli import app

    for insecure in (False, True):
        out = tmp_path / f"serve-{insecure}.yaml"
        args = ["serve", "--write-config", str(out)] + (["--insecure"] if insecure else [])
        assert CliRunner().invoke(app, args).exit_code == 0
        text = out.read_text()
        config = yaml.safe_load(text)
        assert config["http_options"]["host"] == "0.0.0.0"
        app_args = config["applications"][0]["args"]
        if insecure:
            assert "WARNING" in text and "require_api_key" not in app_args
        else:
            assert app_args["require_api_key"] == "true" and "DISENTTALK_API_KEY" in text


# -- the drain of an ingress replica (serve.shutdown) on a plain ASGI app --------------------------
@pytest.fixture
def drained_app():
    import asyncio

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serve.shutdown import Connections, DrainMiddleware

    app, connections = FastAPI(), Connections()
    app.add_middleware(DrainMiddleware, connections=connections)

    @app.get("/fast")
    async def fast() -> dict:
        return {"ok": True}

    @app.get("/slow")
    async def slow() -> dict:
        await asyncio.sleep(30)
        return {"ok": True}

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            return

    with TestClient(app) as client:
        yield client, connections


def test_drain_closes_open_streams_1001_and_answers_new_and_late_requests_503(drained_app):
    from starlette.websockets import WebSocketDisconnect

    client, connections = drained_app
    assert client.get("/fast").status_code == 200
    slow = {}
    threading.Thread(target=lambda: slow.update(r=client.get("/slow")), daemon=True).start()
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        while len(connections.requests) < 1:
            time.sleep(0.01)
        report = client.portal.call(connections.drain, 0.3)
        assert report["streams_closed"] == 1 and report["requests_cancelled"] == 1 and report["left"] == 0
        assert '"shutting_down"' in ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1001
    for _ in range(100):
        if "r" in slow:
            break
        time.sleep(0.05)
    assert slow["r"].status_code == 503 and slow["r"].json()["error"]["code"] == "shutting_down"
    late = client.get("/fast")
    assert late.status_code == 503 and late.headers["retry-after"] == "5"
    with client.websocket_connect("/ws") as ws:
        assert '"shutting_down"' in ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_text()
        assert refused.value.code == 1001
