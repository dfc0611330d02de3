"""Block-wise weight quantization with a scale search, in the layout onnxruntime's kernels read.

Why our own: onnxruntime-genai's builder rounds to nearest (RTN) with a block's min/max range,
or runs k_quant (slow, crashes on odd K/32, keeps untied embeddings fp32; issue 11). The error
of a block is what a better scale buys back, as llama.cpp's k-quants do (`make_qkx2_quants`):
try a range of candidate scales around the min/max one, refit each by weighted least squares
on the levels it chose, keep the one with the least (importance-weighted) squared error.

Layout (`MatMulNBits` and `GatherBlockQuantized`, com.microsoft, block along the reduced axis):
a weight [N, K] (N outputs, K inputs; an ONNX MatMul's B transposed) is cut into rows of
`ceil(K / block)` blocks; each block has a float32 `scale`, an unsigned integer zero point and
levels `q` in [0, 2**bits - 1]; it dequantizes to `(q - zero_point) * scale`. Zero points are
integers (not floats: HQQ's float zero points take a slow CPU path, 3.8 tok/s; issue 11), so
the representable range always holds 0 and the fit is over `scale` and an integer offset.

Pure numpy, deterministic (no randomness, same bytes for the same inputs). Never imports onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BlockQuantized", "dequantize", "pack_levels", "pack_zero_points", "quantize"]

# Candidate scales: (qmax + r) / (max - min) for r in R_STEPS (llama.cpp's Q4_K tries r from
# -1 to +1 by 0.1); each candidate is refit by least squares, then refined twice.
R_STEPS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
REFINE = 2
ROWS_AT_ONCE = 4096  # blocks of rows handled per numpy call: bounds the temporaries


@dataclass(frozen=True)
class BlockQuantized:
    """A weight [N, K] as levels [N, blocks, block] (uint8), scales and zero points [N, blocks]."""

    levels: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    bits: int
    block: int
    k: int

    def dequantize(self) -> np.ndarray:
        return dequantize(self)


def quantize(
    weight: np.ndarray,
    bits: int,
    block: int,
    *,
    search: bool = True,
    importance: np.ndarray | None = None,
    magnitude: bool = False,
) -> BlockQuantized:
    """Quantize `weight` [N, K] asymmetrically per block of `block` along K.

    `search=False` is onnxruntime's RTN (scale = range / qmax over [min(x, 0), max(x, 0)]).
    `importance` [K] (e.g. the mean square of each input channel's activation on calibration
    text, the diagonal of XᵀX as llama.cpp's imatrix and AWQ use) weights each column's squared
    error; without it every element counts alike. `magnitude` also weighs each element by
    sqrt(sigma² + x²) (sigma² = twice the block's mean square), as llama.cpp's k-quants do, so
    large weights are kept closer. K is zero-padded to a whole number of blocks.
    """
    import numpy as np

    rows, k = weight.shape
    blocks = -(-k // block)
    padded = np.zeros((rows, blocks * block), dtype=np.float32)
    padded[:, :k] = weight
    column_weight = np.ones(blocks * block, dtype=np.float32)
    if importance is not None:
        column_weight[:k] = np.maximum(np.asarray(importance, dtype=np.float32), 1e-12)
    column_weight[k:] = 0.0
    levels = np.empty((rows, blocks, block), dtype=np.uint8)
    scales = np.empty((rows, blocks), dtype=np.float32)
    zeros = np.empty((rows, blocks), dtype=np.uint8)
    qmax = (1 << bits) - 1
    for start in range(0, rows, ROWS_AT_ONCE):
        stop = min(start + ROWS_AT_ONCE, rows)
        x = padded[start:stop].reshape(-1, block)
        w = np.broadcast_to(column_weight.reshape(blocks, block), (stop - start, blocks, block))
        w = w.reshape(-1, block)
        if magnitude:  # llama.cpp's imatrix weighting: importance * sqrt(sigma^2 + x^2)
            sigma2 = 2.0 * np.mean(x * x, axis=1, keepdims=True)
            w = w * np.sqrt(sigma2 + x * x)
        q, s, z = (_searched if search else _rtn)(x, w, qmax)
        levels[start:stop] = q.reshape(stop - start, blocks, block)
        scales[start:stop] = s.reshape(stop - start, blocks)
        zeros[start:stop] = z.reshape(stop - start, blocks)
    return BlockQuantized(levels, scales, zeros, bits, block, k)


def dequantize(quantized: BlockQuantized) -> np.ndarray:
    """The float32 weight [N, K] the kernels compute with: (q - zero_point) * scale."""
    import numpy as np

    q = quantized.levels.astype(np.float32) - quantized.zero_points[..., None].astype(np.float32)
    full = q * quantized.scales[..., None]
    return full.reshape(full.shape[0], -1)[:, : quantized.k]


def _range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    low = np.minimum(x.min(axis=1), 0.0)
    high = np.maximum(x.max(axis=1), 0.0)
    return low, high


def _levels(x: np.ndarray, inverse: np.ndarray, zero: np.ndarray, qmax: int) -> np.ndarray:
    import numpy as np

    return np.clip(np.rint(x * inverse[:, None]) + zero[:, None], 0, qmax)


def _rtn(x: np.ndarray, w: np.ndarray, qmax: int) -> tuple[np.ndarray, ...]:
    """onnxruntime's asymmetric round-to-nearest (quantize_matmul_4bits): the reference."""
    import numpy as np

    low, high = _range(x)
    scale = (high - low) / qmax
    safe = np.where(scale == 0, 1.0, scale)
    zero = np.clip(np.rint(-low / safe), 0, qmax)
    q = _levels(x, 1.0 / safe, zero, qmax)
    return q.astype(np.uint8), scale.astype(np.float32), zero.astype(np.uint8)


def _error(x: np.ndarray, w: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    import numpy as np

    diff = offset * scale[:, None] - x
    return np.einsum("bi,bi->b", w, diff * diff)


def _refit(x: np.ndarray, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The least-squares scale for fixed integer offsets (levels - zero point)."""
    import numpy as np

    num = np.einsum("bi,bi->b", w, x * offset)
    den = np.einsum("bi,bi->b", w, offset * offset)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _searched(x: np.ndarray, w: np.ndarray, qmax: int) -> tuple[np.ndarray, ...]:
    """The best of the candidate scales, each refit; then `REFINE` re-quantize/refit rounds.

    A refit scale can come out negative or zero (a block of zeros): such candidates lose to
    the min/max one, which is always among them (r = 0 before the refit).
    """
    import numpy as np

    low, high = _range(x)
    span = np.where(high > low, high - low, 1.0)
    q0, best_scale, best_zero = _rtn(x, w, qmax)
    best_offset = q0.astype(np.float32) - best_zero[:, None]
    best_error = _error(x, w, best_offset, best_scale)
    for r in R_STEPS:
        inverse = (qmax + r) / span
        zero = np.clip(np.rint(-low * inverse), 0, qmax)
        offset = _levels(x, inverse, zero, qmax) - zero[:, None]
        scale = _refit(x, w, offset)
        for _ in range(REFINE):
            good = scale > 0
            inverse = np.where(good, 1.0 / np.where(good, scale, 1.0), inverse)
            zero = np.clip(np.rint(-low * inverse), 0, qmax)
            offset = _levels(x, inverse, zero, qmax) - zero[:, None]
            scale = _refit(x, w, offset)
        error = _error(x, w, offset, scale)
        better = (error < best_error) & (scale > 0)
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
        best_offset = np.where(better[:, None], offset, best_offset)
    levels = best_offset + best_zero[:, None]
    return levels.astype(np.uint8), best_scale.astype(np.float32), best_zero.astype(np.uint8)


def pack_levels(quantized: BlockQuantized) -> np.ndarray:
    """MatMulNBits' B / GatherBlockQuantized's data: uint8 [N, blocks, block * bits / 8].

    4 bits: two levels a byte, the first in the low nibble. 8 bits: one a byte.
    """
    import numpy as np

    if quantized.bits == 8:
        return quantized.levels
    if quantized.bits != 4:
        raise ValueError(f"{quantized.bits}-bit packing is not supported (4 or 8)")
    low, high = quantized.levels[..., 0::2], quantized.levels[..., 1::2]
    return (low | (high << 4)).astype(np.uint8)


def pack_zero_points(quantized: BlockQuantized) -> np.ndarray:
    """Zero points as the kernels read them: 4 bits two a byte per row (padded), 8 bits one."""
    import numpy as np

    zeros = quantized.zero_points
    if quantized.bits == 8:
        return zeros.reshape(-1)
    rows, blocks = zeros.shape
    padded = np.zeros((rows, blocks + blocks % 2), dtype=np.uint8)
    padded[:, :blocks] = zeros
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8).reshape(-1)


def quantize_gptq(
    weight: np.ndarray,
    hessian: np.ndarray,
    bits: int,
    block: int,
    *,
    damp: float = 0.01,
) -> BlockQuantized:
    """GPTQ (Frantar et al. 2022) with our per-block scale search: each column's rounding error
    is pushed onto the columns not yet quantized, weighted by the inverse of H = XᵀX.

    `hessian` [K, K] is the (mean) XᵀX of this MatMul's input on calibration text. Columns are
    taken in order, a block of `block` at a time (so a block's scale and zero point are searched,
    weighted by diag(H), on the weights as the earlier blocks' errors left them); `damp` adds that
    fraction of H's mean diagonal, as the paper does, so H stays invertible on a small slice.
    """
    import numpy as np

    rows, k = weight.shape
    blocks = -(-k // block)
    width = blocks * block
    w = np.zeros((rows, width), dtype=np.float64)
    w[:, :k] = weight
    h = np.zeros((width, width), dtype=np.float64)
    h[:k, :k] = hessian
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += np.eye(width) * damp * float(np.mean(np.diag(h)))
    inverse = np.linalg.inv(h)
    upper = np.linalg.cholesky(inverse).T  # H^-1 = Uᵀ U, U upper
    qmax = (1 << bits) - 1
    levels = np.empty((rows, blocks, block), dtype=np.uint8)
    scales = np.empty((rows, blocks), dtype=np.float32)
    zeros = np.empty((rows, blocks), dtype=np.uint8)
    diag = np.diag(h).astype(np.float32)
    for b in range(blocks):
        lo, hi = b * block, (b + 1) * block
        part = w[:, lo:hi].copy()
        channel = np.broadcast_to(diag[lo:hi], part.shape).astype(np.float32)
        _, scale, zero = _searched(part.astype(np.float32), channel, qmax)
        scale64, zero64 = scale.astype(np.float64), zero.astype(np.float64)
        inverse_scale = np.where(scale64 > 0, 1.0 / np.where(scale64 > 0, scale64, 1.0), 0.0)
        errors = np.zeros_like(part)
        for i in range(block):
            column = part[:, i]
            q = np.clip(np.rint(column * inverse_scale) + zero64, 0, qmax)
            levels[:, b, i] = q
            error = (column - (q - zero64) * scale64) / upper[lo + i, lo + i]
            part[:, i:] -= np.outer(error, upper[lo + i, lo + i : hi])
            errors[:, i] = error
        w[:, hi:] -= errors @ upper[lo:hi, hi:]
        scales[:, b], zeros[:, b] = scale, zero
    return BlockQuantized(levels, scales, zeros, bits, block, k)
