"""MkDocs hook: the serving API's OpenAPI schema, built from the FastAPI app at docs build time.

``serve.api.create_app`` builds the ingress app from a backend object (deployment handles, the
serve config, the API key). Only the schema is read here, so the backend is a stub and nothing
starts (no Ray, no model). The hook

* adds ``openapi.json`` (exactly ``app.openapi()``) to the built site, and
* replaces the ``<!-- openapi -->`` marker of ``serving.md`` with an endpoint list: method, path,
  summary, request fields and responses of every route in the schema, plus the WebSocket routes
  (OpenAPI has no WebSocket operations).

The multipart routes read their form themselves (two files and option fields), so the schema
declares no request body for them; their option fields are then taken from the pydantic models
the routes validate with (``FORM_MODELS``). A route with neither, or a model that is gone, fails
the build, so the page cannot drift from the code.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- openapi -->"
PAGE = "serving.md"
SCHEMA_FILE = "openapi.json"

# The models behind the routes that parse their own request body (module:class); used only
# where the app's schema declares no request body.
FORM_MODELS = {
    ("POST", "/v1/portraits"): "serve.api:PortraitOptions",
    ("POST", "/v1/generate"): "serve.api:GenerateOptions",
    ("WS", "/v1/stream"): "serve.stream:StartMessage",
}
# File fields of the multipart routes (they are not options, so the models above omit them).
FORM_FILES = {
    ("POST", "/v1/portraits"): [("image", "the photo (any format Pillow reads)")],
    ("POST", "/v1/generate"): [("image", "the photo, unless `portrait_id` is given"),
                               ("audio", "the speech (any format FFmpeg reads), unless `text` is given")],
}

log = logging.getLogger("mkdocs.hooks.openapi")
_cache: dict[str, Any] = {}


class _Limits:
    max_upload_mb = 20
    max_steps = 100
    max_text_chars = 400


class _Config:
    limits = _Limits()


class _Backend:
    """Stands in for the deployment handles: the schema never calls them."""

    api_key = None
    cfg = _Config()
    portraits = animator = None

    def key_ok(self, key: str | None) -> bool:
        return True


def _app() -> Any:
    if "app" not in _cache:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from serve.api import create_app

        _cache["app"] = create_app(_Backend())
    return _cache["app"]


def schema() -> dict[str, Any]:
    """The app's OpenAPI schema (what ``GET /openapi.json`` of a running server returns)."""
    if "schema" not in _cache:
        _cache["schema"] = _app().openapi()
    return _cache["schema"]


# -- rendering ---------------------------------------------------------------------------------
def _resolve(node: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    out: Any = spec
    for part in ref.lstrip("#/").split("/"):
        out = out[part]
    return out


def _type(prop: dict[str, Any], spec: dict[str, Any]) -> str:
    prop = _resolve(prop, spec)
    if "anyOf" in prop:
        kinds = [_type(p, spec) for p in prop["anyOf"]]
        return " or ".join(dict.fromkeys(kinds))
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if prop.get("type") == "array":
        return f"array of {_type(prop.get('items', {}), spec)}"
    if prop.get("format") == "binary":
        return "file"
    return str(prop.get("type", "any"))


def _limits(prop: dict[str, Any]) -> str:
    parts = []
    for node in [prop, *prop.get("anyOf", [])]:
        lo, hi = node.get("minimum"), node.get("maximum")
        if lo is not None and hi is not None:
            parts.append(f"{lo}–{hi}")
        elif lo is not None:
            parts.append(f"≥ {lo}")
        elif hi is not None:
            parts.append(f"≤ {hi}")
        if node.get("pattern"):
            parts.append(f"`{node['pattern']}`")
    return ", ".join(parts)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fields_table(obj: dict[str, Any], spec: dict[str, Any], files: list[tuple[str, str]]) -> list[str]:
    obj = _resolve(obj, spec)
    required = set(obj.get("required", []))
    rows = ["| field | type | default | range | description |", "|---|---|---|---|---|"]
    for name, text in files:
        rows.append(f"| `{name}` | file | – | – | {_cell(text)} |")
    for name, prop in obj.get("properties", {}).items():
        default = "required" if name in required else (
            "–" if prop.get("default") is None else f"`{json.dumps(prop['default'])}`")
        rows.append(f"| `{name}` | {_cell(_type(prop, spec))} | {default} | {_cell(_limits(prop)) or '–'} "
                    f"| {_cell(prop.get('description', ''))} |")
    return rows


def _model_schema(key: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    target = FORM_MODELS[key]
    module, _, name = target.partition(":")
    try:
        model = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"openapi hook: {target} (the fields of {' '.join(key)}) is gone: {exc}") from exc
    return target, model.model_json_schema()


def _request(method: str, path: str, op: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    params = op.get("parameters", [])
    if params:
        lines += ["**Parameters**", "", "| name | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {}), spec))} "
                         f"| {'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |")
        lines.append("")
    body = op.get("requestBody")
    key = (method, path)
    if body:
        for ctype, content in body.get("content", {}).items():
            lines += [f"**Request body** (`{ctype}`)", ""]
            lines += _fields_table(content.get("schema", {}), spec, [])
            lines.append("")
    elif key in FORM_MODELS:
        target, model = _model_schema(key)
        lines += [f"**Request** (`multipart/form-data`; option fields from `{target.replace(':', '.')}`)", ""]
        lines += _fields_table(model, model, FORM_FILES.get(key, []))
        lines.append("")
    return lines


def _responses(op: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    lines = ["**Responses**", ""]
    for code, resp in op.get("responses", {}).items():
        resp = _resolve(resp, spec)
        kinds = ", ".join(f"`{c}`" for c in resp.get("content", {})) or "no body"
        lines.append(f"- `{code}` {resp.get('description', '')} ({kinds})")
    return [*lines, ""]


def _auto_summary(op: dict[str, Any]) -> str:
    """FastAPI's summary for a route without one: its function name, title-cased."""
    name = op.get("operationId", "").split("_")
    app = {r.name: r for r in _app().routes if hasattr(r, "name")}
    for n in range(len(name), 0, -1):
        if "_".join(name[:n]) in app:
            return "_".join(name[:n]).replace("_", " ").title()
    return ""


def render(spec: dict[str, Any], websockets: list[str]) -> str:
    """The endpoint list of ``spec`` as Markdown."""
    info = spec.get("info", {})
    out = [f"*Generated from the app's OpenAPI {spec.get('openapi', '')} schema "
           f"({info.get('title', '')} v{info.get('version', '')}) when the docs were built; "
           f"the schema itself: [{SCHEMA_FILE}]({SCHEMA_FILE}).*", ""]
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            verb = method.upper()
            out += [f"### `{verb} {path}`", ""]
            summary = op.get("summary", "")
            if summary and summary != _auto_summary(op):
                out += [summary, ""]
            if op.get("description"):
                out += [op["description"], ""]
            out += _request(verb, path, op, spec)
            out += _responses(op, spec)
    for path in websockets:
        out += [f"### `WS {path}`", "", "WebSocket (not in the OpenAPI schema, which has no WebSocket "
                "operations). The start message's fields:", ""]
        if ("WS", path) not in FORM_MODELS:
            raise PluginError(f"openapi hook: no start-message model for WS {path} in FORM_MODELS")
        target, model = _model_schema(("WS", path))
        out += [f"(from `{target.replace(':', '.')}`)", "", *_fields_table(model, model, []), ""]
    return "\n".join(out)


def _websockets() -> list[str]:
    from fastapi.routing import APIWebSocketRoute

    return [r.path for r in _app().routes if isinstance(r, APIWebSocketRoute)]


# -- MkDocs events -----------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    """Add the schema to the site as ``openapi.json``."""
    text = json.dumps(schema(), indent=2) + "\n"
    files.append(File.generated(config, SCHEMA_FILE, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the endpoint list where ``serving.md`` has the marker."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"openapi hook: {PAGE} has no {MARKER} marker")
    # links in the listing are relative to docs/ (the page's folder), as in any page
    return markdown.replace(MARKER, render(schema(), _websockets()))
