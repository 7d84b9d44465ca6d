"""Example portraits the page offers (``GET /v1/examples``): public-domain photos from packages
the server already has, so nothing is downloaded and nothing is stored in the repository.

* ``astronaut``: Eileen Collins, NASA astronaut (scikit-image's ``skimage.data.astronaut()``,
  a NASA photo, public domain); the project's demo portrait.
* ``grace_hopper``: Rear Admiral Grace Hopper (matplotlib's sample data ``grace_hopper.jpg``,
  a US Navy photo, public domain).

Only the photos whose package is importable here are listed. Each is served as JPEG, encoded once
per process and kept in memory.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass

JPEG_QUALITY = 92


def _astronaut() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _grace_hopper() -> bytes:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:  # already a JPEG: served as it is
        return f.read()


@dataclass(frozen=True)
class Photo:
    """One example photo: where it comes from and under what licence."""

    id: str
    label: str
    source: str
    licence: str
    package: str  # the module that must be importable for the photo to be listed
    load: Callable[[], bytes]  # → JPEG bytes

    def summary(self) -> dict[str, str]:
        """Its entry in ``GET /v1/examples`` (``url`` relative to the app's root)."""
        return {"id": self.id, "label": self.label, "source": self.source, "licence": self.licence,
                "url": f"v1/examples/{self.id}.jpg"}


PHOTOS = (
    Photo("astronaut", "Eileen Collins, astronaut",
          "NASA photo, from scikit-image's sample data (skimage.data.astronaut)", "public domain",
          "skimage", _astronaut),
    Photo("grace_hopper", "Grace Hopper, computer scientist",
          "US Navy photo, from matplotlib's sample data (grace_hopper.jpg)", "public domain",
          "matplotlib", _grace_hopper),
)


@functools.cache
def available() -> tuple[Photo, ...]:
    """The photos whose package is importable here."""
    return tuple(p for p in PHOTOS if importlib.util.find_spec(p.package) is not None)


def listing() -> dict:
    """``GET /v1/examples``."""
    return {"photos": [p.summary() for p in available()]}


def jpeg(photo_id: str) -> bytes | None:
    """The JPEG bytes of an available photo (encoded once), or None for an unknown id."""
    found = {p.id: p for p in available()}.get(photo_id)
    return None if found is None else _encoded(found)


@functools.cache
def _encoded(photo: Photo) -> bytes:
    return photo.load()
