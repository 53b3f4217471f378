import numpy as np

from a3c_core.preprocess import (
    CROP_BOTTOM,
    CROP_TOP,
    SIZE,
    bytescale,
    pillow_bilinear_weights,
    prepro,
    prepro_reference,
)

ONE = 1 << 22  # 1.0 in Pillow's fixed point for 8-bit images


def test_fast_prepro_equals_the_pillow_reference_on_real_frames(atari_frames):
    for frame in atari_frames:
        np.testing.assert_array_equal(prepro(frame), prepro_reference(frame))


def test_fast_prepro_equals_reference_on_random_and_flat_frames():
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 256, (20, 210, 160, 3), dtype=np.uint8))
    frames += [np.zeros((210, 160, 3), np.uint8), np.full((210, 160, 3), 200, np.uint8)]
    for frame in frames:
        np.testing.assert_array_equal(prepro(frame), prepro_reference(frame))


def test_fast_prepro_equals_reference_on_frames_lit_at_the_crop_edges():
    # the fast path treats the outermost rows and columns of the crop apart and pads
    # each row; noise outside the crop must be ignored
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (8, 210, 160, 3), dtype=np.uint8)
    crops = frames[:, CROP_TOP:CROP_BOTTOM]
    crops[:] = 40
    edges = [np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]]
    for k, edge in enumerate(edges):
        crops[k][edge] = 250  # one bright line
        line = crops[k + 4][edge]
        line[:] = rng.integers(0, 256, line.shape)  # the frame's extremes, likely
    expected = np.stack([prepro_reference(f) for f in frames])
    np.testing.assert_array_equal(prepro(frames), expected)


def test_batched_prepro_equals_frame_by_frame(atari_frames):
    batch = atari_frames[:16]
    expected = np.stack([prepro_reference(f) for f in batch])
    np.testing.assert_array_equal(prepro(batch), expected)
    assert prepro(batch.reshape(4, 4, 210, 160, 3)).shape == (4, 4, 1, 80, 80)


def test_output_is_float32_in_unit_range_and_min_max_rescaled(atari_frames):
    out = prepro(atari_frames[0])
    assert out.shape == (1, 80, 80) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_bytescale_stretches_any_range_to_0_255():
    grey = np.array([[10.0, 20.0], [30.0, 40.0]])
    np.testing.assert_array_equal(bytescale(grey), [[0, 85], [170, 255]])
    assert bytescale(np.full((2, 2), 7.0)).max() == 0  # a flat frame stays black


def test_an_empty_batch_gives_an_empty_batch():
    assert prepro(np.zeros((0, 210, 160, 3), np.uint8)).shape == (0, 1, 80, 80)


def test_interior_weights_are_the_taps_1_3_3_1_that_halve_hard_codes():
    weights = pillow_bilinear_weights(CROP_BOTTOM - CROP_TOP, SIZE)  # (80, 160)
    taps = np.array([1, 3, 3, 1]) * (ONE // 8)  # 2**19 * (1, 3, 3, 1)
    for i in range(1, SIZE - 1):  # inputs 2i-1 .. 2i+2, and nothing else
        assert np.array_equal(weights[i, 2 * i - 1 : 2 * i + 3], taps)
        assert weights[i].sum() == taps.sum() == ONE
    # with the rounding term ONE / 2, the common factor 2**19 divides out exactly:
    # (2**19 * n + 2**21) >> 22 == (n + 4) >> 3 for every n
    n = np.arange(8 * 255 + 1)
    assert np.array_equal((n * (ONE // 8) + ONE // 2) >> 22, (n + 4) >> 3)


def test_border_pixels_round_like_halve_for_every_input():
    """Pillow's 3-tap border weights (about 3/7, 3/7, 1/7) give exactly
    (3 * (near pair) + far + 3) // 7, which `halve` computes in int16."""
    weights = pillow_bilinear_weights(CROP_BOTTOM - CROP_TOP, SIZE)
    first, last = weights[0, :3], weights[-1, -3:][::-1]  # near, near, far
    assert np.array_equal(first, last) and first[0] == first[1]
    assert weights[0, 3:].sum() == weights[-1, :-3].sum() == 0
    pair, far = np.ogrid[: 2 * 255 + 1, : 255 + 1]  # every near-pair sum, far pixel
    pillow = (first[0] * pair + first[2] * far + ONE // 2) >> 22
    assert np.array_equal(pillow, (3 * pair + far + 3) // 7)
