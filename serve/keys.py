"""The API key: read once where the app is built, and only its SHA-256 digest handed to Ray.

``DISENTTALK_API_KEY`` is read in the process that builds the application (``disenttalk serve``,
or Serve's build task on a cluster, where a Kubernetes Secret sets it on every Ray pod). The
Ingress gets the key's SHA-256 digest as a constructor argument and compares the digest of what a
client sends with it in constant time. The key itself never enters ``runtime_env`` (which Ray's
dashboard, job and actor tables show), the deployment config or a replica's environment; a
digest read there does not let anyone in, since the server hashes whatever it is sent. Only a
guessable key could be found from its digest, so use a random one (``openssl rand -hex 32``).

Unset: no key (only allowed on a loopback address, or with ``--insecure``). Set but empty or
blank: an error, never "auth off".
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping

API_KEY_ENV = "DISENTTALK_API_KEY"
MIN_KEY_CHARS = 16  # shorter keys are accepted with a warning


class ApiKeyError(ValueError):
    """``DISENTTALK_API_KEY`` is set but unusable."""


def digest(key: str) -> str:
    """The SHA-256 hex digest of ``key`` (what the Ingress holds)."""
    return hashlib.sha256(key.encode()).hexdigest()


def configured_digest(environ: Mapping[str, str] | None = None) -> str | None:
    """The digest of ``DISENTTALK_API_KEY`` from ``environ`` (default: this process's), None when
    it is unset; :class:`ApiKeyError` when it is set but empty or blank."""
    environ = os.environ if environ is None else environ
    if API_KEY_ENV not in environ:
        return None
    key = environ[API_KEY_ENV]
    if not key.strip():
        raise ApiKeyError(f"{API_KEY_ENV} is set but empty: set it to a random key (openssl rand -hex "
                        f"32) or unset it to serve without one (loopback addresses only)")
    return digest(key)


def matches(key: str | None, expected_digest: str | None) -> bool:
    """Whether ``key`` is the key of ``expected_digest`` (constant-time comparison of digests)."""
    if key is None or expected_digest is None:
        return False
    return hmac.compare_digest(digest(key), expected_digest)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or 0.0.0.0 / :: (every address)
