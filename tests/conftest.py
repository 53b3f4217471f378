"""Shared fixtures: real Atari frames and the original baby-a3c checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch

from a3c_core.envs import make_env

ROOT = Path(__file__).resolve().parent.parent
BABY_A3C = ROOT.parent / "shared" / "baby-a3c"

torch.set_num_threads(1)  # tests run beside other work on 2 cores


def baby_a3c_checkpoint(game: str, steps: int = 80) -> Path:
    path = BABY_A3C / game / f"model.{steps}.tar"
    if not path.exists():
        pytest.skip(f"original baby-a3c checkpoints not found at {BABY_A3C}")
    return path


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
