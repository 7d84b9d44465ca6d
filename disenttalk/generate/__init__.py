"""Generation: bundle → motion (windows, streaming, controls) → frames → video."""

from disenttalk.generate.generator import Generator, Settings
from disenttalk.generate.motion import Controls, Motion
from disenttalk.generate.stream import MotionStream, WindowPlan

__all__ = ["Controls", "Generator", "Motion", "MotionStream", "Settings", "WindowPlan"]
