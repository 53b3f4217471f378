"""Shared fixtures: real Atari frames and the original baby-a3c checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch

from a3c_core.envs import make_env
from a3c_core.original import OriginalFileError, original_file

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)  # tests run beside other work on 2 cores


def baby_a3c_checkpoint(game: str, steps: int = 80) -> Path:
    """baby-a3c's checkpoint `<game>/model.<steps>.tar` (a3c_core.original: the
    shipped 80M ones, $A3C_ORIGINAL_DIR, the cache or a download); skips the test,
    saying how to get the file, if it cannot be had."""
    try:
        return original_file(game, f"model.{steps}.tar")
    except OriginalFileError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def atari_frames() -> np.ndarray:
    """60 real RGB frames from each seed game, random actions: (180, 210, 160, 3)."""
    frames = []
    for env_id in ("Pong-v4", "Breakout-v4", "SpaceInvaders-v4"):
        env = make_env(env_id)
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(60):
            for _ in range(5):  # spread the frames over more of the game
                frame, *_ = env.step(env.action_space.sample())
            frames.append(frame)
        env.close()
    return np.stack(frames)
