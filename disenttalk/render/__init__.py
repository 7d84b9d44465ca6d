"""Rendering frames from landmarks: the warp renderer (a dense landmark-driven warp plus painting)."""

from disenttalk.render.renderer import RenderConfig, WarpRenderer

__all__ = ["RenderConfig", "WarpRenderer"]
