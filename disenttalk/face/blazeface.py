"""MediaPipe's BlazeFace detectors (full- and short-range) as boxes, scores and keypoints in
photo pixels, a photo padded by its own border, and the box geometry that compares detections."""

from __future__ import annotations

import numpy as np

from disenttalk.face.crop import CropTransform


def detector(min_confidence: float, full_range: bool = True):
    from disenttalk.face.tracker import import_mediapipe, quiet_native_logs

    mp = import_mediapipe()

    with quiet_native_logs():
        return mp.solutions.face_detection.FaceDetection(
            model_selection=1 if full_range else 0, min_detection_confidence=min_confidence)


def detect(image: np.ndarray, detector) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
    """Face boxes (x, y, w, h) in pixels, scores and keypoints [6,2] (pixels) in an RGB uint8 image."""
    from disenttalk.face.tracker import quiet_native_logs

    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    out = []
    with quiet_native_logs():
        result = detector.process(image)
    for det in result.detections or ():
        b = det.location_data.relative_bounding_box
        points = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints], np.float32)
        out.append(((b.xmin * w, b.ymin * h, b.width * w, b.height * h), float(det.score[0]),
                    points.reshape(-1, 2)))
    return out


def detect_boxes(image: np.ndarray, detector) -> list[tuple[tuple[float, float, float, float], float]]:
    """Face boxes (x, y, w, h) in pixels and scores in an RGB uint8 image."""
    return [(box, score) for box, score, _ in detect(image, detector)]


def padded(image: np.ndarray, pad: int) -> np.ndarray:
    """``image`` inside a square canvas ``pad`` px wider than its larger side on each side, its own
    pixels at (x, y) + its offset (``(side − w) // 2``, ``(side − h) // 2``) and its border carried
    outward (:meth:`CropTransform.crop`'s padding)."""
    h, w = image.shape[:2]
    side = max(h, w) + 2 * pad
    ox, oy = (side - w) // 2, (side - h) // 2
    canvas = CropTransform(centres=np.array([[side / 2 - ox, side / 2 - oy]]), sides=np.array([float(side)]),
                           size=side, frame_shape=(h, w))
    return canvas.crop(np.asarray(image)[None])[0]



def outside_fraction(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """Share of a box's area that lies outside an image of ``shape`` (H, W)."""
    x, y, bw, bh = box
    h, w = shape
    inside_w = max(0.0, min(x + bw, w) - max(x, 0.0))
    inside_h = max(0.0, min(y + bh, h) - max(y, 0.0))
    return 1.0 - inside_w * inside_h / max(bw * bh, 1e-6)



def centre_in(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether box ``a``'s centre lies in box ``b`` (x, y, w, h)."""
    cx, cy = a[0] + a[2] / 2, a[1] + a[3] / 2
    return b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3]


def same_face(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two detections are one face: either centre in the other box, widths within 2×."""
    return (centre_in(a, b) or centre_in(b, a)) and 0.5 <= a[2] / max(b[2], 1e-6) <= 2.0
