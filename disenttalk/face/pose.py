"""Head pose by similarity (Umeyama) alignment of each frame to a canonical face.

A frame's landmarks X [478,3] are modelled as ``X = s · R · Y + (tx, ty, 0)`` where Y is the
pose-normalised shape in the canonical frame. The pose vector is 6 numbers::

    pose = (rx, ry, rz, tx, ty, log s)

with (rx, ry, rz) the rotation as an axis-angle vector (radians; its norm is the angle),
(tx, ty) the image position (pixels) of the centroid of the rigid points, and log s the
log-scale from canonical units to pixels. MediaPipe's z has no fixed origin, so z translation
is not part of the pose: normalised shapes are centred in z and decoded shapes come back
with the rigid points' mean z at 0.

Only rigid points (upper face oval, nose bridge, eye corners) drive the fit, so opening the
mouth or closing the eyes does not leak into the pose. The canonical frame is frontal:
x from the subject's right eye corner to the left, y down the face, z away from the camera,
centred on the rigid points and scaled to unit RMS radius over them.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from disenttalk.face import topology as topo

# Upper face oval (forehead to ear level on both sides), nose bridge and eye corners; the nose
# tip is left out because the upper lip pulls it a little.
_OVAL = topo.FACE_OVAL
RIGID = topo.unique(_OVAL[:9], _OVAL[28:], (168, 6, 197, 195), (33, 133, 362, 263))
_RIGID = np.asarray(RIGID)


def frontalise(shape: np.ndarray) -> np.ndarray:
    """Put one shape [478,3] into the canonical frame (frontal, rigid-centred, unit RMS)."""
    shape = np.asarray(shape, dtype=np.float64)
    x = shape[topo.LEFT_EYE_OUTER] - shape[topo.RIGHT_EYE_OUTER]
    x /= np.linalg.norm(x)
    y = shape[topo.CHIN] - shape[topo.FOREHEAD]
    y -= (y @ x) * x  # Gram–Schmidt
    y /= np.linalg.norm(y)
    axes = np.stack([x, y, np.cross(x, y)])  # rows: the new x, y, z in old coordinates
    centred = shape - shape[_RIGID].mean(0)
    rotated = centred @ axes.T
    return rotated / np.sqrt((rotated[_RIGID] ** 2).sum(-1).mean())


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched similarity fit dst ≈ s·R·src (both centred) → (R [B,3,3], s [B]) (Umeyama 1991)."""
    cov = np.einsum("bni,nj->bij", dst, src) / src.shape[0]  # Σ_xy, [B,3,3]
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # no reflections
    fix = np.ones_like(d)
    fix[:, -1] = sign
    rot = np.einsum("bij,bj,bjk->bik", u, fix, vt)
    var_src = (src**2).sum(-1).mean()
    scale = (d * fix).sum(-1) / var_src
    return rot, scale


def estimate_pose(landmarks: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """Pose [...,6] of every frame [...,478,3] against a canonical shape [478,3] (NaN in → NaN out)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    lead = lm.shape[:-2]
    flat = lm.reshape(-1, lm.shape[-2], 3)
    pose = np.full((flat.shape[0], 6), np.nan)
    ok = np.isfinite(flat[:, _RIGID]).all(axis=(1, 2))
    if ok.any():
        dst = flat[ok][:, _RIGID]
        centre = dst.mean(1, keepdims=True)
        src = np.asarray(canonical, dtype=np.float64)[_RIGID]
        rot, scale = _umeyama(src - src.mean(0), dst - centre)
        pose[ok, :3] = Rotation.from_matrix(rot).as_rotvec()
        pose[ok, 3:5] = centre[:, 0, :2]
        pose[ok, 5] = np.log(scale)
    return pose.reshape(*lead, 6)


def _split(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotation matrices [B,3,3], translation [B,3] (z = 0) and scale [B] of flat poses [B,6]."""
    rot = np.full((pose.shape[0], 3, 3), np.nan)
    ok = np.isfinite(pose).all(-1)
    if ok.any():
        rot[ok] = Rotation.from_rotvec(pose[ok, :3]).as_matrix()
    trans = np.concatenate([pose[:, 3:5], np.zeros((pose.shape[0], 1))], axis=-1)
    return rot, trans, np.exp(pose[:, 5])


def apply_pose(shapes: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Canonical-frame shapes [...,478,3] → image landmarks: s·R·Y + (tx, ty, 0)."""
    shapes = np.asarray(shapes, dtype=np.float64)
    pose = np.broadcast_to(np.asarray(pose, dtype=np.float64), shapes.shape[:-2] + (6,))
    rot, trans, scale = _split(pose.reshape(-1, 6))
    flat = shapes.reshape(-1, shapes.shape[-2], 3)
    out = scale[:, None, None] * np.einsum("bij,bnj->bni", rot, flat) + trans[:, None, :]
    return out.reshape(shapes.shape)


def remove_pose(landmarks: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Image landmarks [...,478,3] → canonical-frame shapes (the inverse of :func:`apply_pose`)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    rot, trans, scale = _split(np.asarray(pose, dtype=np.float64).reshape(-1, 6))
    flat = lm.reshape(-1, lm.shape[-2], 3)
    centred = flat - trans[:, None, :]
    centred[..., 2] -= flat[:, _RIGID, 2].mean(1, keepdims=True)  # z has no fixed origin
    out = np.einsum("bji,bnj->bni", rot, centred) / scale[:, None, None]  # Rᵀ(X − t)/s
    return out.reshape(lm.shape)


def normalise(landmarks: np.ndarray, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose-normalised shapes [...,478,3] and pose [...,6] of landmarks [...,478,3]."""
    pose = estimate_pose(landmarks, canonical)
    return remove_pose(landmarks, pose), pose
