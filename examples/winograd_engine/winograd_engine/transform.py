"""Winograd's minimal filtering algorithm F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016), in NumPy.

One 2x2 block of outputs of a 3x3 convolution is computed from a 4x4 input tile d and
the 3x3 kernel g as

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* is the element-wise product)

so each (output channel, input channel) pair costs 16 multiplications per 2x2 outputs
instead of 4 x 9 = 36: 2.25x fewer. Summing the element-wise products over the input
channels turns the 16 positions of the 4x4 tile into 16 independent GEMMs, which is what
the engine's multiplier array computes. The transforms themselves only add and subtract
(the 1/2 of G is folded into the weights, transformed once, offline).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

OUT = 2  # outputs per tile side (m)
KERNEL = 3  # kernel side (r)
TILE = OUT + KERNEL - 1  # input tile side: 4

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def transform_weights(weights: np.ndarray) -> np.ndarray:
    """U = G g G^T for every kernel of an M x C x 3 x 3 weight, laid out 4 x 4 x M x C:
    one M x C matrix per position of the 4x4 tile (the 16 GEMMs' weight operands)."""
    u = np.einsum("ij,mcjk,lk->ilmc", G, weights.astype(np.float64), G)
    return np.ascontiguousarray(u.astype(weights.dtype))


def winograd_conv2d(
    x: np.ndarray, u: np.ndarray, bias: np.ndarray | None, pads: tuple[int, int, int, int]
) -> np.ndarray:
    """A stride-1 3x3 convolution of NCHW `x` with transformed weights `u` (4 x 4 x M x C),
    `pads` = (top, left, bottom, right), as F(2x2, 3x3): input tiles, 16 batched GEMMs,
    output transform. Vectorised: no Python loop over tiles or channels."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    out_h, out_w = h + top + bottom - KERNEL + 1, w + left + right - KERNEL + 1
    tiles_h, tiles_w = -(-out_h // OUT), -(-out_w // OUT)
    # Pad so that every tile is whole: odd output sizes get one extra row / column.
    extra_h = tiles_h * OUT + KERNEL - 1 - (h + top + bottom)
    extra_w = tiles_w * OUT + KERNEL - 1 - (w + left + right)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom + extra_h), (left, right + extra_w)))
    # d[n, c, th, tw, 4, 4]: overlapping 4x4 tiles, 2 apart.
    d = sliding_window_view(xp, (TILE, TILE), axis=(2, 3))[:, :, ::OUT, ::OUT]
    v = np.einsum("ij,nctwjk,lk->ilcntw", B_T.astype(x.dtype), d, B_T.astype(x.dtype))  # B^T d B
    products = np.matmul(u.reshape(TILE * TILE, *u.shape[2:]), v.reshape(TILE * TILE, c, -1))  # 16 x M x (N·th·tw)
    m = u.shape[2]
    products = products.reshape(TILE, TILE, m, n, tiles_h, tiles_w)
    y = np.einsum("ij,jkmntw,lk->nmtiwl", A_T.astype(x.dtype), products, A_T.astype(x.dtype))  # A^T M A
    y = y.reshape(n, m, tiles_h * OUT, tiles_w * OUT)[:, :, :out_h, :out_w]
    if bias is not None:
        y = y + bias.reshape(1, m, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)
