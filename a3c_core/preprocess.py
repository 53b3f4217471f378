"""Atari frame -> 80x80 network input, exactly as baby-a3c did it (chapter 1).

baby-a3c used `imresize(img[35:195].mean(2), (80, 80)) / 255` from the long-removed
`scipy.misc`. That call did three things: crop the playfield, min-max rescale the grey
frame to 0..255 uint8 (scipy's `bytescale`), and resize it with Pillow's antialiased
bilinear filter. `prepro_reference` repeats those steps with Pillow; `prepro` computes
the identical array several times faster in integer arithmetic, and can process a
batch of frames at once (chapter 1 measures both). Tests check that the two agree
bit for bit.
"""

import numpy as np
from PIL import Image

CROP_TOP, CROP_BOTTOM = 35, 195  # the playfield rows of a 210x160 Atari frame
SIZE = 80  # side of the square network input
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def bytescale(grey: np.ndarray) -> np.ndarray:
    """scipy.misc's min-max rescale of a float image to uint8; (..., H, W) -> same.

    Book: chapter 1.
    """
    low = grey.min(axis=(-2, -1), keepdims=True)
    high = grey.max(axis=(-2, -1), keepdims=True)
    span = np.where(high > low, high - low, 1.0)  # a flat frame would divide by 0
    scaled = (grey - low) * (255.0 / span)
    return (scaled.clip(0, 255) + 0.5).astype(np.uint8)


def prepro_reference(frame: np.ndarray) -> np.ndarray:
    """The seed's recipe with Pillow (slow, for tests); (210, 160, 3) -> (1, 80, 80).

    Book: chapter 1.
    """
    grey = frame[CROP_TOP:CROP_BOTTOM].mean(2)  # (160, 160) float64
    image = Image.fromarray(bytescale(grey), mode="L")
    small = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR))
    return small.astype(np.float32).reshape(1, SIZE, SIZE) / 255.0


def pillow_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point antialiased bilinear resize as an (out, in) integer matrix.

    Follows `precompute_coeffs` in Pillow's Resample.c: a triangle filter stretched by
    the scale factor, normalised per output pixel, then rounded to 22-bit integers.

    Book: chapter 1.
    """
    scale = in_size / out_size
    support = 1.0 * max(scale, 1.0)  # bilinear support is 1 input pixel, stretched
    weights = np.zeros((out_size, in_size), dtype=np.int32)
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), in_size)
        xs = np.arange(first, last)
        w = np.maximum(0.0, 1.0 - np.abs((xs - centre + 0.5) / max(scale, 1.0)))
        w = w / w.sum()
        weights[out, first:last] = np.floor(0.5 + w * (1 << _PRECISION_BITS))
    return weights


def _halving_taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Split a 2:1 resize matrix into border taps and small integer interior taps.

    For an exact halving, every interior output pixel mixes inputs 2i-1..2i+2 with
    the same weights, 2**19 * [1, 3, 3, 1] in Pillow's fixed point; dividing them and
    the rounding term by their common factor gives the same result in int16
    arithmetic. Only the first and last output pixels (3 taps each) differ. Checked
    here, so that the fast path cannot silently drift from Pillow.
    """
    n_out = len(weights)
    taps = weights[1, 1:5]
    for i in range(1, n_out - 1):
        assert np.array_equal(weights[i, 2 * i - 1 : 2 * i + 3], taps)
        assert weights[i].sum() == taps.sum()
    common = np.gcd.reduce(np.append(taps, 1 << (_PRECISION_BITS - 1)))
    borders = np.stack([weights[0, :3], weights[-1, -3:]])  # (2, 3)
    return borders, taps // common, int(np.log2(common))


_BORDERS, _TAPS, _TAPS_SHIFT = _halving_taps(
    pillow_bilinear_weights(CROP_BOTTOM - CROP_TOP, SIZE)
)


def _halve_last_axis(x: np.ndarray) -> np.ndarray:
    """Pillow's bilinear 2:1 resize of the last axis of an int16 image, in integers."""
    n = x.shape[-1]
    a, b, c, d = (int(t) for t in _TAPS)
    shift = _PRECISION_BITS - _TAPS_SHIFT
    out = np.empty(x.shape[:-1] + (n // 2,), dtype=np.int16)
    interior = (
        a * x[..., 1 : n - 3 : 2]
        + b * x[..., 2 : n - 2 : 2]
        + c * x[..., 3 : n - 1 : 2]
        + d * x[..., 4:n:2]
    )
    out[..., 1:-1] = (interior + (1 << (shift - 1))) >> shift
    for col, taps, inputs in (
        (0, _BORDERS[0], x[..., :3]),
        (-1, _BORDERS[1], x[..., -3:]),
    ):
        total = inputs.astype(np.int64) @ taps + (1 << (_PRECISION_BITS - 1))
        out[..., col] = total >> _PRECISION_BITS
    return out  # weights are non-negative and sum to 1, so no clipping is needed


def _bytescale_lut(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`bytescale` of every possible grey value (sum of R, G, B = 0..765) per frame."""
    grey_levels = np.arange(3 * 255 + 1) / 3.0  # exactly numpy's mean of 3 uint8
    span = np.where(high > low, high - low, 1.0)[:, None]
    scaled = (grey_levels - low[:, None]) * (255.0 / span)
    return (scaled.clip(0, 255) + 0.5).astype(np.int16)  # (N, 766)


def prepro(frames: np.ndarray) -> np.ndarray:
    """Same as `prepro_reference`, faster: (..., 210, 160, 3) uint8 -> (..., 1, 80, 80).

    The min-max rescale becomes a per-frame lookup table indexed by R+G+B, and the
    resize integer arithmetic on strided slices: Pillow's exact steps, horizontal
    pass first (rounded to 8 bits), then vertical.

    Book: chapter 1.
    """
    crop = frames[..., CROP_TOP:CROP_BOTTOM, :, :]
    rgb_sum = crop[..., 0].astype(np.int16) + crop[..., 1] + crop[..., 2]
    flat = rgb_sum.reshape(-1, rgb_sum.shape[-2] * rgb_sum.shape[-1])  # (N, 25600)
    lut = _bytescale_lut(flat.min(-1) / 3.0, flat.max(-1) / 3.0)  # (N, 766)
    offsets = np.arange(len(flat), dtype=np.int32)[:, None] * lut.shape[-1]
    grey = np.take(lut, flat + offsets).reshape(rgb_sum.shape)  # (..., 160, 160)
    wide = _halve_last_axis(grey)  # (..., 160, 80)
    small = _halve_last_axis(np.swapaxes(wide, -1, -2))  # (..., 80, 80), transposed
    out = np.swapaxes(small, -1, -2).astype(np.float32) / np.float32(255.0)
    return out.reshape(*frames.shape[:-3], 1, SIZE, SIZE)
