"""Resize a photo to the network's square input (bilinear, ``align_corners=True``).

Reproduces ml-sharp's preprocessing::

    x = torch.from_numpy(image).float().permute(2, 0, 1) / 255
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=True)

with the same float32 arithmetic as PyTorch's CPU kernel: source coordinates
``i * float32((n_in - 1) / (n_out - 1))``, weights ``(1 - l, l)``, and the value
``wh0 * (ww0 * x00 + ww1 * x01) + wh1 * (ww0 * x10 + ww1 * x11)``, so the result
is equal to PyTorch's up to float32 rounding (usually bit for bit).

The resize is separable and gather-based: each block of output rows takes the
source rows it needs, gathers the two source columns of every output column
(uint8), converts them exactly as PyTorch does (``float32(v) / 255``), blends
them, then blends the two source rows.  No Python loop over pixels; blocks and
reused buffers keep the temporaries in the cache.
"""

from __future__ import annotations

import numpy as np

# Output rows per block: the gathered float32 source rows of a block stay around 1-3 MB.
ROWS_PER_BLOCK = 64


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1-D linear resize with ``align_corners=True``.

    Returns ``(i0 [n_out] int64, i1 [n_out] int64, w0 [n_out] float32, w1 [n_out] float32)``:
    output ``k`` is ``w0[k] * x[i0[k]] + w1[k] * x[i1[k]]``, computed as PyTorch does.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in={n_in}, n_out={n_out}")
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0.0)
    src = scale * np.arange(n_out, dtype=np.float32)  # [n_out] float32
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    w0 = np.float32(1.0) - w1
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, w0.astype(np.float32), w1.astype(np.float32)


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to the network input: float32 [1, 3, size, size] in [0, 1].

    image: [H, W, 3] uint8.  Bilinear with ``align_corners=True``, equal to PyTorch's
    ``F.interpolate(x / 255, mode="bilinear", align_corners=True)`` to float32 rounding.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has zero size {image.shape}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    h_in, w_in = image.shape[:2]
    r0, r1, rw0, rw1 = linear_taps(h_in, size)  # source rows of each output row
    c0, c1, cw0, cw1 = linear_taps(w_in, size)  # source columns of each output column
    # Work on rows of interleaved RGB: column k of the output row reads bytes 3*c + (0, 1, 2).
    flat = np.ascontiguousarray(image).reshape(h_in, 3 * w_in)  # [H, 3W] uint8
    channel = np.arange(3)
    cols0 = (3 * c0[:, None] + channel).ravel()  # [3 size]
    cols1 = (3 * c1[:, None] + channel).ravel()
    cw0 = np.repeat(cw0, 3)  # [3 size] float32
    cw1 = np.repeat(cw1, 3)
    rw0, rw1 = rw0[:, None], rw1[:, None]  # [size, 1]

    # Reused buffers (fresh multi-MB temporaries would be page-faulted in for every block).
    max_rows = min(h_in, 2 * ROWS_PER_BLOCK)
    source = np.empty((max_rows, 3 * w_in), dtype=np.uint8)
    gathered = np.empty((max_rows, 3 * size), dtype=np.uint8)
    left = np.empty((max_rows, 3 * size), dtype=np.float32)
    right = np.empty((max_rows, 3 * size), dtype=np.float32)
    top = np.empty((ROWS_PER_BLOCK, 3 * size), dtype=np.float32)
    bottom = np.empty((ROWS_PER_BLOCK, 3 * size), dtype=np.float32)
    out = np.empty((1, 3, size, size), dtype=np.float32)
    scale = np.float32(255.0)
    for start in range(0, size, ROWS_PER_BLOCK):
        stop = min(start + ROWS_PER_BLOCK, size)
        n_out = stop - start
        rows = np.union1d(r0[start:stop], r1[start:stop])  # source rows this block needs
        n = len(rows)
        src = np.take(flat, rows, axis=0, out=source[:n], mode="clip")  # [n, 3W] uint8
        # Horizontal pass: h[r, k] = cw0[k] * x[r, cols0[k]] / 255 + cw1[k] * x[r, cols1[k]] / 255.
        np.take(src, cols0, axis=1, out=gathered[:n], mode="clip")
        np.divide(gathered[:n], scale, out=left[:n], dtype=np.float32)
        left[:n] *= cw0
        np.take(src, cols1, axis=1, out=gathered[:n], mode="clip")
        np.divide(gathered[:n], scale, out=right[:n], dtype=np.float32)
        right[:n] *= cw1
        left[:n] += right[:n]
        # Vertical pass: rw0 * h[r0] + rw1 * h[r1].
        np.take(left[:n], np.searchsorted(rows, r0[start:stop]), axis=0, out=top[:n_out], mode="clip")
        top[:n_out] *= rw0[start:stop]
        np.take(left[:n], np.searchsorted(rows, r1[start:stop]), axis=0, out=bottom[:n_out], mode="clip")
        bottom[:n_out] *= rw1[start:stop]
        top[:n_out] += bottom[:n_out]
        out[0, :, start:stop] = top[:n_out].reshape(n_out, size, 3).transpose(2, 0, 1)
    return out
