"""Face geometry: tracking, pose, morphable model, measures, editors and the region split."""

from disenttalk.face.crop import CropTransform, crop_clip
from disenttalk.face.editors import close_eyes, close_lips, open_mouth
from disenttalk.face.measures import (
    blink_rate,
    detect_blinks,
    eye_aspect_ratio,
    face_size,
    mouth_opening,
)
from disenttalk.face.morphable import MorphableModel
from disenttalk.face.pose import apply_pose, estimate_pose, remove_pose
from disenttalk.face.regions import RegionSplit, select_regions
from disenttalk.face.tracker import FaceTracker, Tracks

__all__ = [
    "CropTransform",
    "FaceTracker",
    "MorphableModel",
    "RegionSplit",
    "Tracks",
    "apply_pose",
    "blink_rate",
    "close_eyes",
    "close_lips",
    "crop_clip",
    "detect_blinks",
    "estimate_pose",
    "eye_aspect_ratio",
    "face_size",
    "mouth_opening",
    "open_mouth",
    "remove_pose",
    "select_regions",
]
