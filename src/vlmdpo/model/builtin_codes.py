"""Fixed, generic codes that seed nano-smolvlm's vision tower: 2-D DCT filters and a sin-cos position code."""
from __future__ import annotations


def dct_basis(patch: int, order: int):
    """Orthonormal 2-D DCT-II basis images [n, patch, patch] with u + v < order, low frequencies first."""
    import math

    import torch

    k = torch.arange(patch, dtype=torch.float64)

    def one_d(u: int):
        scale = math.sqrt(1 / patch) if u == 0 else math.sqrt(2 / patch)
        return scale * torch.cos(math.pi * (2 * k + 1) * u / (2 * patch))

    pairs = sorted(((u, v) for u in range(order) for v in range(order) if u + v < order), key=lambda t: (sum(t), t))
    return torch.stack([torch.outer(one_d(u), one_d(v)) for u, v in pairs]).float()


def sincos_2d(side: int, channels: int):
    """[side*side, channels] fixed 2-D sin-cos position code (MAE): half the channels encode the
    row, half the column, each as sin/cos pairs over geometric frequencies; raster order."""
    import torch

    k = channels // 4
    omega = 1.0 / (10000 ** (torch.arange(k, dtype=torch.float64) / max(k, 1)))
    grid = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")

    def code(pos):
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    out = torch.zeros(side * side, channels, dtype=torch.float64)
    out[:, : 4 * k] = torch.cat([code(rows), code(cols)], dim=1)
    return out.float()
