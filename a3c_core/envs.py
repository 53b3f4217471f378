"""Atari environments as baby-a3c played them (chapter 1).

`make_env` builds one gymnasium ALE environment and checks the game id, with close
names suggested for typos. `AtariBatch` steps K environments in lockstep for one
worker: it preprocesses all K frames in one call, clips rewards for learning while
keeping raw rewards for scores, cuts episodes at `max_episode_steps` agent steps and
resets finished environments at once, so the caller always sees K live games.
"""

import difflib
import warnings

import ale_py
import gymnasium as gym
import numpy as np

from .preprocess import prepro

gym.register_envs(ale_py)
# ALE prints a banner from C++ for every new emulator; errors are enough
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)

SEED_GAMES = ("Breakout-v4", "Pong-v4", "SpaceInvaders-v4")


class UnknownEnvError(ValueError):
    """A game id gymnasium does not know; the message suggests close names.

    Book: chapter 1.
    """


def atari_ids() -> list[str]:
    """Every ALE game id registered with gymnasium (v4 and ALE/*-v5 families).

    Book: chapter 1.
    """
    return sorted(
        env_id
        for env_id, spec in gym.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py")
    )


def check_env_id(env_id: str) -> str:
    """Return `env_id` if it is an ALE game, else raise with suggestions.

    Book: chapter 1.
    """
    ids = atari_ids()
    if env_id in ids:
        return env_id
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"try one of {SEED_GAMES}"
    raise UnknownEnvError(f"unknown Atari game id {env_id!r}: {hint}")


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One ALE environment with RGB frames (our preprocessing needs colour).

    Book: chapter 1.
    """
    check_env_id(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about the old v4 ids
        return gym.make(env_id, render_mode=render_mode)


def num_actions(env_id: str) -> int:
    """Size of the game's minimal action set (6 for Pong, 4 for Breakout).

    Book: chapter 1.
    """
    env = make_env(env_id)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


class AtariBatch:
    """K environments stepped together; observations are (K, 1, 80, 80) float32.

    Book: chapter 1.
    """

    def __init__(self, env_id, num_envs, seed, max_episode_steps, reward_clip=1.0):
        self.envs = [make_env(env_id) for _ in range(num_envs)]
        self.max_episode_steps = max_episode_steps
        self.reward_clip = reward_clip
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)  # raw score so far
        frames = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self.obs = prepro(np.stack(frames))  # (K, 1, 80, 80)

    def step(self, actions: np.ndarray):
        """Act in every game. Returns clipped rewards (K,), dones (K,) and the
        finished episodes as (raw return, length) pairs; `self.obs` is updated."""
        frames, rewards, dones, finished = [], [], [], []
        for k, (env, action) in enumerate(zip(self.envs, actions)):
            frame, reward, terminated, truncated, _ = env.step(int(action))
            self.lengths[k] += 1
            self.returns[k] += reward
            done = terminated or truncated or self.lengths[k] >= self.max_episode_steps
            if done:
                finished.append((float(self.returns[k]), int(self.lengths[k])))
                self.lengths[k], self.returns[k] = 0, 0.0
                frame, _ = env.reset()
            frames.append(frame)
            rewards.append(reward)
            dones.append(done)
        self.obs = prepro(np.stack(frames))
        clipped = np.clip(
            np.asarray(rewards, dtype=np.float32), -self.reward_clip, self.reward_clip
        )
        return clipped, np.asarray(dones), finished

    def close(self):
        for env in self.envs:
            env.close()
