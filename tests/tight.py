"""Tight crops of the real test photos (``tests/photos.py``), cut the way people cut avatars.

Each helper loads a photo with :func:`tests.photos.load` (so the calling test skips when its
package is missing), finds its face landmarks with FaceMesh on the whole photo and cuts:

- :func:`aligned_112`: a 112×112 aligned face crop as face-recognition datasets store them
  (ArcFace's five reference points: eye centres at about (38, 52) and (74, 52), nose tip
  (56, 72), mouth corners (41, 92) and (71, 92)); forehead, chin and ears are outside.
- :func:`forehead_cut`: the photo from mid-forehead down (the top of the head is gone).
- :func:`eyebrows_to_lips`: eyebrows to just under the lower lip, cheek to cheek × 0.85: neither
  of MediaPipe's face detectors finds a face in it as it is.
- :func:`below_nose`: the photo down to just under the nose: the mouth is outside.
"""

from __future__ import annotations

import numpy as np

from tests import photos

# ArcFace's 112×112 template: right eye, left eye (as seen), nose tip, mouth corners
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])


def photo_and_landmarks(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo (uint8 [H,W,3]) and FaceMesh's landmarks [478,3] of its face (photo pixels)."""
    from disenttalk.face.tracker import FaceTracker

    image = photos.load(name)
    with FaceTracker(static=True) as tracker:
        landmarks = tracker.track_image(image)
    assert landmarks is not None, f"FaceMesh finds no face in {name}"
    return image, landmarks


def aligned_112(name: str) -> np.ndarray:
    """A 112×112 ArcFace-style aligned crop of the photo's face (similarity transform, bilinear)."""
    from skimage.transform import SimilarityTransform, warp

    image, lm = photo_and_landmarks(name)
    # iris centres (468: the person's right eye, on the left as seen), nose tip, mouth corners
    points = lm[[468, 473, 1, 61, 291], :2].astype(np.float64)
    transform = SimilarityTransform.from_estimate(points, ARCFACE_112)
    out = warp(image, transform.inverse, output_shape=(112, 112), order=1, preserve_range=True)
    return np.ascontiguousarray(out.round().astype(np.uint8))


def forehead_cut(name: str) -> np.ndarray:
    """The photo from half-way between the hairline landmark (10) and the brows' midpoint (9) down."""
    image, lm = photo_and_landmarks(name)
    top = int(round((lm[10, 1] + lm[9, 1]) / 2))
    return np.ascontiguousarray(image[top:])


def eyebrows_to_lips(name: str, width: float = 0.85) -> np.ndarray:
    """From the brows (105) to just under the lower lip (200), ``width`` × the cheek-to-cheek span."""
    image, lm = photo_and_landmarks(name)
    left, right = lm[234, 0], lm[454, 0]
    centre, half = (left + right) / 2, width * (right - left) / 2
    return np.ascontiguousarray(image[int(lm[105, 1]):int(lm[200, 1]) + 3,
                                      max(0, int(centre - half)):int(centre + half)])


def below_nose(name: str) -> np.ndarray:
    """The photo down to 30 % of the way from under the nose (2) to the upper lip (0)."""
    image, lm = photo_and_landmarks(name)
    return np.ascontiguousarray(image[:int(lm[2, 1] + 0.3 * (lm[0, 1] - lm[2, 1]))])
