import time

import numpy as np
import torch
from torch import nn

from a3c_core.network import ActorCritic
from a3c_core.saliency import gaussian_blur, gaussian_masks, overlay, saliency_maps


class ReadsOneRegion(nn.Module):
    """Value and logits depend only on rows 10..19, columns 50..59 of the frame."""

    hidden_size = 4

    def forward(self, frames, hx):
        patch = frames[:, 0, 10:20, 50:60].reshape(len(frames), -1)  # (N, 100)
        value = patch.pow(2).sum(-1)
        logits = torch.stack([patch.sum(-1), patch[:, :50].sum(-1)], -1)
        return value, logits, hx


class IgnoresItsInput(nn.Module):
    hidden_size = 4

    def forward(self, frames, hx):
        n = len(frames)
        return torch.ones(n), torch.ones(n, 3), hx


def random_frame(seed=0):
    return np.random.default_rng(seed).random((1, 80, 80)).astype(np.float32)


def test_a_network_reading_one_region_is_salient_only_there():
    policy, value = saliency_maps(ReadsOneRegion(), random_frame(), torch.zeros(1, 4))
    assert policy.shape == value.shape == (16, 16)
    for grid in (policy, value):
        peak = np.unravel_index(grid.argmax(), grid.shape)
        # the peak lies within one mask width (5 px) of rows 10-19, columns 50-59
        assert 1 <= peak[0] <= 4 and 9 <= peak[1] <= 12, peak
        far = grid.copy()
        far[0:7, 7:15] = 0  # keep what lies more than ~2 sigma (10 px) from the region
        assert far.max() < 1e-2 * grid.max()


def test_a_network_that_ignores_its_input_has_zero_saliency():
    policy, value = saliency_maps(IgnoresItsInput(), random_frame(), torch.zeros(1, 4))
    assert not policy.any() and not value.any()


def test_the_memory_from_the_episode_is_used():
    torch.manual_seed(0)
    model = ActorCritic(6).eval()
    frame = random_frame()
    a = saliency_maps(model, frame, torch.zeros(1, 256))[0]
    b = saliency_maps(model, frame, torch.rand(1, 256))[0]
    assert not np.allclose(a, b)


def test_one_frame_is_one_batch_and_well_under_a_second():
    torch.manual_seed(0)
    model = ActorCritic(6).eval()
    calls = []
    model.register_forward_hook(lambda m, inputs, out: calls.append(len(inputs[0])))
    saliency_maps(model, random_frame(), torch.zeros(1, 256))  # warm-up
    start = time.perf_counter()
    saliency_maps(model, random_frame(), torch.zeros(1, 256))
    assert time.perf_counter() - start < 1.0
    assert calls == [257, 257]  # the frame and its 256 perturbations, together


def test_blur_and_masks():
    image = random_frame()[0]
    blurred = gaussian_blur(image, 3.0)
    assert blurred.shape == image.shape and blurred.std() < image.std()
    np.testing.assert_allclose(gaussian_blur(np.full((80, 80), 0.3), 3.0), 0.3)
    masks = gaussian_masks()
    assert masks.shape == (256, 80, 80) and masks.max() == 1.0
    assert masks[17, 5, 5] == 1.0  # grid location (1, 1) is centred on pixel (5, 5)


def test_overlay_colours_policy_blue_and_value_red():
    frame = np.zeros((210, 160, 3), np.uint8)
    policy, value = np.zeros((16, 16)), np.zeros((16, 16))
    policy[8, 8], value[2, 2] = 1.0, 1.0
    out = overlay(frame, policy, value)
    assert (
        out.shape == frame.shape and out[:35].sum() == 0
    )  # the score bar is untouched
    assert out[35 + 80, 80, 2] > 100 and out[35 + 80, 80, 0] < 10
    assert out[35 + 20, 20, 0] > 100 and out[35 + 20, 20, 2] < 10
