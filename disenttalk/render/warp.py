"""Dense backward warp driven by landmark displacements: thin-plate spline on a coarse grid.

The spline lives on the portrait (source) plane, so its kernel matrix and the solve depend only on
the portrait and are precomputed once: a frame's forward field on the coarse grid is one matmul
``u = M @ (q - p)``. The backward field the sampler needs (for each output pixel, where to read
in the portrait) is the inverse of that map, found by a few fixed-point steps on the coarse grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage import measure


def tps_kernel(r2: np.ndarray) -> np.ndarray:
    """Thin-plate radial basis U(r) = r² log r² (written in r², zero at r = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-30)), 0.0)


def still_anchors(
    contour: np.ndarray, scale: float, height: int, width: int, lattice: int
) -> np.ndarray:
    """Points that never move, [A,2] pixels: a ring around the face and the background beyond it.

    The ring is the face contour [K,2] scaled about its centroid; the background is a
    ``lattice``×``lattice`` grid over the whole image (its border included) minus the points
    inside the ring. Without the lattice the spline, which only minimises bending, bulges the
    background beyond a ring when the jaw drops.
    """
    centre = contour.mean(0, keepdims=True)
    ring = centre + scale * (contour - centre)
    gy, gx = np.meshgrid(
        np.linspace(0.0, height - 1.0, lattice),
        np.linspace(0.0, width - 1.0, lattice),
        indexing="ij",
    )
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    background = grid[~measure.points_in_poly(grid, ring)]
    inside = (ring >= 0).all(1) & (ring[:, 0] <= width - 1) & (ring[:, 1] <= height - 1)
    return np.concatenate([ring[inside], background])


def _node_weights(lo: int, hi: int, pixels: int, nodes: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels lo…hi−1 of an axis of ``pixels`` upsampled from ``nodes`` nodes, corners aligned:
    each pixel's left node (≤ nodes − 2) and its weight on the next one."""
    at = torch.arange(lo, hi, dtype=torch.float32, device=device) * ((nodes - 1) / (pixels - 1))
    left = at.floor().long().clamp(max=nodes - 2)
    return left, at - left


class ThinPlateField:
    """Precomputed TPS interpolation of control-point displacements onto a G×G grid."""

    def __init__(
        self,
        controls: np.ndarray,  # [N,2] moving control points (portrait landmarks), pixels
        anchors: np.ndarray,  # [A,2] points whose displacement is always zero, pixels
        height: int,
        width: int,
        grid_size: int = 64,
        regularization: float = 1e-5,
        device: str | torch.device = "cpu",
    ) -> None:
        self.height, self.width, self.grid_size = height, width, grid_size
        # Normalised coordinates in [-1, 1] (align_corners=True): the unit grid_sample reads.
        self._to_norm = np.array([2.0 / (width - 1), 2.0 / (height - 1)])
        pts = (
            np.concatenate([controls, anchors]).astype(np.float64) * self._to_norm - 1.0
        )  # [N+A,2]
        n_all = len(pts)
        # TPS system [[K + λI, P], [Pᵀ, 0]] [w; a] = [v; 0]; λ smooths conflicting nearby points.
        k = tps_kernel(((pts[:, None] - pts[None]) ** 2).sum(-1)) + regularization * np.eye(n_all)
        p = np.concatenate([np.ones((n_all, 1)), pts], 1)  # [N+A,3]
        system = np.block([[k, p], [p.T, np.zeros((3, 3))]])
        g = np.linspace(-1.0, 1.0, grid_size)
        gy, gx = np.meshgrid(g, g, indexing="ij")
        grid = np.stack([gx.ravel(), gy.ravel()], 1)  # [G²,2] (x, y)
        basis = np.concatenate(
            [tps_kernel(((grid[:, None] - pts[None]) ** 2).sum(-1)), np.ones((len(grid), 1)), grid],
            1,
        )  # [G², N+A+3]
        # M = basis · L⁻¹ restricted to the controls' columns (anchors carry zero displacement).
        m = np.linalg.solve(system.T, basis.T).T[:, : len(controls)]  # [G², N]
        self.matrix = torch.as_tensor(m, dtype=torch.float32, device=device)
        self.to_norm = torch.as_tensor(self._to_norm, dtype=torch.float32, device=device)
        self.grid = torch.as_tensor(grid, dtype=torch.float32, device=device).view(
            1, grid_size, grid_size, 2
        )
        self._nodes = self.grid.permute(0, 3, 1, 2)  # [1,2,G,G] the nodes' own places

    def forward_field(self, displacement: torch.Tensor) -> torch.Tensor:
        """Control displacements [B,N,2] pixels → forward field u [B,2,G,G] in normalised units."""
        b, n, _ = displacement.shape
        v = (displacement * self.to_norm).permute(1, 0, 2).reshape(n, b * 2)  # [N,B·2]
        u = self.matrix @ v  # [G²,B·2]: one GEMM for the whole chunk
        return u.view(self.grid_size, self.grid_size, b, 2).permute(2, 3, 0, 1).contiguous()

    def backward_grid(
        self,
        displacement: torch.Tensor,
        iterations: int = 4,
        still: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Sampling grid [B,H,W,2] for grid_sample: output pixel x reads the portrait at s(x)
        (:meth:`backward_field` upsampled over the whole image)."""
        back = self.backward_field(displacement, iterations, still)
        return self.sampling_grid(back, (0, 0, self.width, self.height))

    def backward_field(
        self,
        displacement: torch.Tensor,
        iterations: int = 4,
        still: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Backward displacement s(x) − x [B,2,G,G] on the coarse grid, normalised units.

        s solves s + u(s) = x (u the forward field on the portrait plane): fixed point
        s ← x − u(s), started from s = x − u(x), evaluated on the coarse grid.

        ``still = (below, above)`` pixels: where the backward displacement is under ``below`` it
        is zero (the pixel reads its own place, so it keeps the portrait's exact value), over
        ``above`` it is kept, and in between it is ramped up, so the field stays continuous.
        """
        u = self.forward_field(displacement)  # [B,2,G,G]
        x = self.grid.expand(u.shape[0], -1, -1, -1)  # [B,G,G,2]
        back = -u  # backward displacement s − x, [B,2,G,G]
        for _ in range(iterations):
            s = x + back.permute(0, 2, 3, 1)
            back = -F.grid_sample(u, s, mode="bilinear", padding_mode="border", align_corners=True)
        if still is not None:
            below, above = still
            pixels = (back / self.to_norm[None, :, None, None]).square().sum(1, keepdim=True).sqrt()
            back = back * ((pixels - below) / max(above - below, 1e-6)).clamp(0.0, 1.0)
        return back

    def moving_box(self, back: torch.Tensor) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) outside which the upsampled ``back`` [B,2,G,G] is zero in
        every frame (there a pixel reads its own place); empty (x1 = x0) where nothing moves."""
        nodes = back.ne(0).any(1).any(0)  # [G,G]
        rows, cols = nodes.any(1).nonzero()[:, 0], nodes.any(0).nonzero()[:, 0]
        if len(rows) == 0:
            return 0, 0, 0, 0
        step = ((self.width - 1) / (self.grid_size - 1), (self.height - 1) / (self.grid_size - 1))
        # a pixel reads the nodes either side of it: the box reaches to the next nodes out
        x0, x1 = int((int(cols[0]) - 1) * step[0]) + 1, int((int(cols[-1]) + 1) * step[0]) + 1
        y0, y1 = int((int(rows[0]) - 1) * step[1]) + 1, int((int(rows[-1]) + 1) * step[1]) + 1
        return max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height)

    def sampling_grid(self, back: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Sampling grid [B,h,w,2] of one pixel box: s = x + ``back`` [B,2,G,G] upsampled
        bilinearly (corners aligned) to the image's pixels, the box cut out."""
        x0, y0, x1, y1 = box
        # Bilinear upsampling reproduces the affine identity grid exactly, so upsampling the
        # nodes' sampling positions gives every pixel's. Separably, over the box's pixels only,
        # straight into grid_sample's layout (x and y interleaved): across the box's columns
        # from the node rows it reads, then across its rows (what F.interpolate does over the
        # whole image, to float rounding; 0.41 against 0.85-0.90 ms a 256² frame on one thread).
        ix, fx = _node_weights(x0, x1, self.width, self.grid_size, back.device)
        iy, fy = _node_weights(y0, y1, self.height, self.grid_size, back.device)
        r0 = int(iy[0]) if len(iy) else 0
        r1 = int(iy[-1]) + 2 if len(iy) else 0
        nodes = (self._nodes + back)[:, :, r0:r1].permute(0, 2, 3, 1)  # [B,rows,G,2]
        across = torch.lerp(nodes[:, :, ix], nodes[:, :, ix + 1], fx[:, None])  # [B,rows,w,2]
        iy = iy - r0
        return torch.lerp(across[:, iy], across[:, iy + 1], fy[:, None, None])  # [B,h,w,2]
