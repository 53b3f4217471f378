"""Atari frame -> 80x80 network input, exactly as baby-a3c did it (chapter 1).

baby-a3c used `imresize(img[35:195].mean(2), (80, 80)) / 255` from the long-removed
`scipy.misc`. That call did three things: crop the playfield, min-max rescale the grey
frame to 0..255 uint8 (scipy's `bytescale`), and resize it with Pillow's antialiased
bilinear filter. `prepro_reference` repeats those steps with Pillow; `prepro` computes
the identical array several times faster in integer arithmetic, and can process a
batch of frames at once (chapter 1 measures both). Tests check that the two agree
bit for bit.
"""

import math

import numpy as np
from PIL import Image

CROP_TOP, CROP_BOTTOM = 35, 195  # the playfield rows of a 210x160 Atari frame
SIZE = 80  # side of the square network input
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images
_GREY_LEVELS = np.arange(3 * 255 + 1) / 3.0  # R+G+B -> exactly numpy's mean of 3 uint8


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


def halve(even: np.ndarray, odd: np.ndarray, axis: int) -> np.ndarray:
    """Pillow's bilinear 2:1 resize along `axis` (-1 or -2) of (N, ..., 80, 81) planes.

    `even` and `odd` hold the int16 input lines 2i and 2i+1; the output has their
    shape. Interior pixel i is (x[2i-1] + 3 * (x[2i] + x[2i+1]) + x[2i+2] + 4) >> 3:
    Pillow's 22-bit weights 2**19 * (1, 3, 3, 1) and its rounding term 2**21 divided
    by their common factor. Each term is a shift of a whole plane, so every
    operation runs over contiguous memory. Shifted past the first or last line, a
    plane reads nothing (the edge of a frame) or column 80, which must be 0 when
    `axis` is -1; so the border pixels get the sum of their 3 taps, n = 3 * (near
    pair) + far pixel, and are rounded apart as (n + 3) // 7, which is exactly
    Pillow's rounding of its 3-tap weights for every input (tests/test_preprocess.py
    checks both claims against `pillow_bilinear_weights`).

    Book: chapter 1.
    """
    step = 1 if axis == -1 else even.shape[-1]  # distance to the next line
    out = np.add(even, odd)
    out *= 3
    size = math.prod(even.shape[1:])  # per frame; explicit, as N may be 0
    flat, e, o = (x.reshape(len(x), size) for x in (out, even, odd))  # row per frame
    flat[:, step:] += o[:, :-step]  # x[2i-1]
    flat[:, :-step] += e[:, step:]  # x[2i+2]
    edges = out.swapaxes(axis, -1)[..., :: SIZE - 1]  # output lines 0 and 79
    edge_values = (edges + 3) // 7
    out += 4
    out >>= 3
    edges[...] = edge_values
    return out  # weights are non-negative and sum to 1, so no clipping is needed


def _channel_sums(batch: np.ndarray) -> np.ndarray:
    """R+G+B of the cropped (N, 210, 160, 3) frames as (N, 2, 2, 80, 81) int16 planes.

    Entry [n, p, q, i, j] is the pixel at row 2i+q, column 2j+p, so that the two
    resize passes find even and odd columns, then rows, in separate planes. Column
    80 pads each row; it repeats column 0, so it changes no frame's min or max.
    """
    height, width = CROP_BOTTOM - CROP_TOP, 2 * SIZE
    sums = np.empty((len(batch), 2, 2, SIZE, SIZE + 1), np.int16)
    lanes = np.empty(height * width * 3, np.int16)  # one crop as R, G, B, R, G, B, ...
    triples = np.empty_like(lanes)  # sums of 3 neighbours: every third is R+G+B
    pixels = triples[::3].reshape(SIZE, 2, SIZE, 2).transpose(3, 1, 0, 2)  # p, q, i, j
    crops = batch[:, CROP_TOP:CROP_BOTTOM]
    for crop, out in zip(crops, sums[..., :SIZE]):  # a frame at a time stays in cache
        np.copyto(lanes.reshape(crop.shape), crop)
        # shifted copies are contiguous and vectorised, unlike every third lane
        np.add(lanes[:-2], lanes[1:-1], out=triples[:-2])
        triples[:-2] += lanes[2:]
        np.copyto(out, pixels)  # the one strided pass
    sums[..., SIZE] = sums[..., 0]
    return sums


def _bytescale_lut(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`bytescale` of every possible grey value (sum of R, G, B = 0..765) per frame."""
    span = np.where(high > low, high - low, 1.0)[:, None]
    scaled = (_GREY_LEVELS - low[:, None]) * (255.0 / span)
    return (scaled.clip(0, 255) + 0.5).astype(np.int16)  # (N, 766)


def _grey_planes(batch: np.ndarray) -> np.ndarray:
    """The min-max rescaled grey of `batch`, in `_channel_sums` planes padded by 0."""
    sums = _channel_sums(batch)
    flat = sums.reshape(len(sums), 4 * SIZE * (SIZE + 1))  # explicit: N may be 0
    lows, highs = flat.min(-1), flat.max(-1)
    lut = _bytescale_lut(lows / 3.0, highs / 3.0)  # (N, 766)
    sums[..., SIZE] = lows[:, None, None, None]  # the padding: the table maps it to 0
    for frame, table in zip(sums, lut):
        # in place (take first converts the int16 indices to a new intp array); numpy
        # buffers `out` in the default mode "raise", and every index is in range anyway
        np.take(table, frame, out=frame, mode="wrap")
    return sums


def prepro(frames: np.ndarray) -> np.ndarray:
    """Same as `prepro_reference`, faster: (..., 210, 160, 3) uint8 -> (..., 1, 80, 80).

    The min-max rescale becomes a per-frame lookup table indexed by R+G+B, and the
    resize integer arithmetic on planes of even and odd columns and rows: Pillow's
    exact steps, horizontal pass first (rounded to 8 bits), then vertical.

    Book: chapter 1.
    """
    batch = frames.reshape(-1, *frames.shape[-3:])  # (N, 210, 160, 3)
    grey = _grey_planes(batch)  # (N, 2, 2, 80, 81): column parity, row parity, i, j
    wide = halve(grey[:, 0], grey[:, 1], axis=-1)  # (N, 2, 80, 81): row parity, i, j
    small = halve(wide[:, 0], wide[:, 1], axis=-2)  # (N, 80, 81)
    out = np.divide(small[..., :SIZE], np.float32(255.0), dtype=np.float32)
    return out.reshape(*frames.shape[:-3], 1, SIZE, SIZE)
