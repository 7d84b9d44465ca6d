"""The image a clip's motion is rendered onto: the speaker's photo, or the clip's first frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from workflows.evaluation.config import EvaluateConfig


def reference_image(cfg: EvaluateConfig, clip_id: str, info: dict[str, Any], first_frame: np.ndarray,
                    first_landmarks: np.ndarray | None) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(kind, image, landmarks or None) the model animates for one clip; see ``reference``."""
    from disenttalk import media

    if cfg.reference != "first_frame" and info.get("portrait"):
        return "portrait", media.read_image(info["portrait"]), None  # landmarks: tracked in render
    if cfg.reference == "portrait":
        raise ValueError(f"{clip_id}: reference=portrait, but the corpus manifest names no portrait "
                         "for it (pass --corpus, or use reference=auto|first_frame)")
    return "first_frame", first_frame, first_landmarks


def tracked_reference(cfg: EvaluateConfig, clip_id: str, info: dict[str, Any], first_frame: np.ndarray | None,
                      first_landmarks: np.ndarray | None) -> tuple[str, np.ndarray, np.ndarray]:
    """:func:`reference_image` with its landmarks (a photo is tracked here); errors name the clip."""
    from disenttalk.face.tracker import FaceTracker

    kind, image, landmarks = reference_image(cfg, clip_id, info, first_frame, first_landmarks)
    if image is None:
        raise ValueError(f"{clip_id}: no reference image ({kind})")
    if landmarks is None:
        with FaceTracker(static=True) as tracker:
            landmarks = tracker.track_image(image)
        if landmarks is None:
            raise ValueError(f"{clip_id}: no face found in the reference image ({kind})")
    return kind, image, landmarks
