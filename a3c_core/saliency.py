"""Perturbation saliency: what does an agent look at? (chapter 7)

Greydanus et al. 2018, "Visualizing and Understanding Atari Agents" (arXiv
1711.00138): blur a small Gaussian patch of the input frame and measure how much the
agent's output changes, S(i, j) = 0.5 * ||L(frame) - L(perturbed at i, j)||^2, with L
the actor's logits (policy saliency) or the critic's value (value saliency), and the
GRU memory taken from the real episode. All perturbations of a frame go through the
network as one batch.
"""

import numpy as np
import torch
import torch.nn.functional as F

from .envs import AtariBatch
from .policy import choose_actions
from .preprocess import CROP_BOTTOM, CROP_TOP, SIZE

STRIDE = 5  # a saliency score every 5 input pixels: a 16x16 grid
MASK_SIGMA = 5.0  # width of the perturbed patch, in input pixels
BLUR_SIGMA = 3.0  # blur of the frame blended in under the patch


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter (mode 'reflect', truncate 4) of a 2-D image.

    Book: chapter 7.
    """
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.pad(image, radius, mode="symmetric")  # scipy's 'reflect'
    for axis in (0, 1):
        windows = np.lib.stride_tricks.sliding_window_view(out, len(kernel), axis=axis)
        out = windows @ kernel
    return out


def gaussian_masks(size: int = SIZE, stride: int = STRIDE, sigma: float = MASK_SIGMA):
    """One Gaussian bump per grid location: (G * G, size, size), peak 1.

    Book: chapter 7.
    """
    centres = np.arange(0, size, stride)
    ys, xs = np.mgrid[:size, :size]
    masks = [
        np.exp(-((ys - i) ** 2 + (xs - j) ** 2) / (2 * sigma**2))
        for i in centres
        for j in centres
    ]
    return np.stack(masks).astype(np.float32)


@torch.no_grad()
def saliency_maps(model, obs: np.ndarray, hx: torch.Tensor, masks=None):
    """Policy and value saliency of one frame; obs (1, 80, 80), hx (1, H) before it.

    Returns two (G, G) arrays, G = 80 / STRIDE. Frame and perturbations are one batch.

    Book: chapter 7.
    """
    masks = gaussian_masks() if masks is None else masks  # (N, 80, 80)
    frame = obs[0]
    blurred = gaussian_blur(frame, BLUR_SIGMA)
    perturbed = frame * (1 - masks) + blurred * masks  # (N, 80, 80)
    batch = np.concatenate([frame[None], perturbed])[:, None].astype(np.float32)
    values, logits, _ = model(torch.from_numpy(batch), hx.expand(len(batch), -1))
    policy = 0.5 * (logits[1:] - logits[:1]).pow(2).sum(-1)  # (N,)
    value = 0.5 * (values[1:] - values[:1]).pow(2)  # (N,)
    side = int(round(len(masks) ** 0.5))
    return policy.reshape(side, side).numpy(), value.reshape(side, side).numpy()


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (G, G) score grid to (size, size) pixels.

    Grid point (i, j) scored a patch centred on input pixel (i, j) * STRIDE, so it
    lands on output pixel (i, j) * size / G; the last row and column are extended.

    Book: chapter 7.
    """
    cells = size // len(grid)
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    n = (len(grid) - 1) * cells + 1
    t = F.interpolate(t, size=(n, n), mode="bilinear", align_corners=True)
    return F.pad(t, (0, size - n, 0, size - n), mode="replicate")[0, 0].numpy()


def overlay(frame: np.ndarray, policy: np.ndarray, value: np.ndarray, strength=None):
    """Raw RGB frame (210, 160, 3) with policy saliency in blue, value in red.

    Each map is scaled by its own maximum (or by `strength`, a (policy, value) pair
    of maxima, to keep colours comparable across the frames of an episode).

    Book: chapter 7.
    """
    rows, cols = CROP_BOTTOM - CROP_TOP, frame.shape[1]
    out = frame.astype(np.float32)
    for grid, channel, top in ((policy, 2, 0), (value, 0, 1)):
        scale = (strength[top] if strength else grid.max()) or 1.0
        heat = upsample(np.clip(grid / scale, 0, 1), rows)[:, :cols]  # (160, 160)
        region = out[CROP_TOP:CROP_BOTTOM, :, channel]
        region += 255 * heat * (1 - region / 255)  # brighten toward full intensity
    return out.clip(0, 255).astype(np.uint8)


@torch.no_grad()
def saliency_rollout(model, env_id: str, steps: int, seed: int = 0, greedy=False):
    """Play up to `steps` agent steps of the episode `play_episode` plays with `seed`;
    returns [(raw frame, policy map, value map)], each map computed with the memory
    from before its step.

    Book: chapter 7.
    """
    game = AtariBatch(env_id, 1, seed, steps, episodes=1)
    generator = torch.Generator().manual_seed(seed)
    hx, masks, out = model.initial_state(1), gaussian_masks(), []
    while game.live:
        policy, value = saliency_maps(model, game.obs[0], hx, masks)
        out.append((game.frames[0], policy, value))
        _, logits, hx = model(torch.from_numpy(game.obs), hx)
        game.step(choose_actions(logits, greedy, generator).numpy())
    game.close()
    return out


def overlay_rollout(rollout) -> list:
    """Overlays of a `saliency_rollout`, coloured on one scale for the whole episode.

    Book: chapter 7.
    """
    strength = (
        max(p.max() for _, p, _ in rollout),
        max(v.max() for _, _, v in rollout),
    )
    return [overlay(frame, p, v, strength) for frame, p, v in rollout]
