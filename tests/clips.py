"""Synthetic test videos built from real photos: a swaying face, two faces that trade sizes."""

from __future__ import annotations

import numpy as np


def face_crop(image: np.ndarray, size: int) -> np.ndarray:
    """A square crop around the largest face of a photo, resized to ``size``² (uint8)."""
    from skimage.transform import resize

    from disenttalk.face.tracker import FaceTracker

    with FaceTracker(static=True) as tracker:
        pts = tracker.track_image(image)
    assert pts is not None, "no face in the photo"
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    centre, side = (lo + hi) / 2, 1.8 * float(np.max(hi - lo))
    y0, x0 = (np.maximum(centre[::-1] - side / 2, 0)).astype(int)
    crop = image[y0 : y0 + int(side), x0 : x0 + int(side)]
    return (resize(crop, (size, size), anti_aliasing=True) * 255).astype(np.uint8)


def two_faces(a: np.ndarray, b: np.ndarray, n: int, height: int = 160) -> np.ndarray:
    """[n,height,2·height,3]: face ``a`` on the left shrinks from full height to 60 % while ``b``
    on the right grows from 60 % to full: the larger face changes sides half-way."""
    from skimage.transform import resize

    frames = np.full((n, height, 2 * height, 3), 128, np.uint8)
    for i in range(n):
        for k, (face, scale) in enumerate(((a, 1.0 - 0.4 * i / (n - 1)), (b, 0.6 + 0.4 * i / (n - 1)))):
            side = int(round(height * scale))
            small = (resize(face, (side, side), anti_aliasing=True) * 255).astype(np.uint8)
            y, x = (height - side) // 2, k * height + (height - side) // 2
            frames[i, y : y + side, x : x + side] = small
    return frames


def sway(face: np.ndarray, n: int, size: int) -> np.ndarray:
    """[n,size,size,3]: a ``size + 16``² face crop seen through a window that sways up and down."""
    from skimage.transform import resize

    big = (resize(face, (size + 16, size + 16), anti_aliasing=True) * 255).astype(np.uint8)
    shifts = np.round(8 + 6 * np.sin(np.arange(n) * 2 * np.pi / 50)).astype(int)
    return np.stack([big[s : s + size, 8 : 8 + size] for s in shifts])


def mark_rotated(path) -> None:
    """Give an MP4's video track a phone's display matrix (shown rotated 90° clockwise), pixels
    untouched: players, and decord, show ``np.rot90(frame, -1)``."""
    import struct
    from pathlib import Path

    data = bytearray(Path(path).read_bytes())
    at = data.find(b"tkhd") + 4 + 4 + 4 * 5 + 8 + 8
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    Path(path).write_bytes(bytes(data))


def write_stereo(path, frames: np.ndarray, fps: float, audio: np.ndarray, rate: int) -> None:
    """An MP4 with H.264 video and AAC audio of ``audio`` float32 [2,S] (stereo) at ``rate``."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="stereo")
        for image in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = rate, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
