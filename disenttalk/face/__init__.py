"""Face geometry: tracking, pose, morphable model, measures, editors and the region split."""

from disenttalk.face.regions import RegionSplit

__all__ = ["RegionSplit"]
