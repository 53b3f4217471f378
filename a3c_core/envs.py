"""Atari environments as baby-a3c played them (chapter 1).

`make_env` builds one gymnasium ALE environment and checks the game id, with close
names suggested for typos. `AtariBatch` plays K environments in lockstep, for a
worker and for every other loop that plays a policy (evaluation, watching an episode,
saliency): it preprocesses all K frames in one call, clips rewards for learning while
keeping raw scores, cuts episodes at `max_episode_steps` agent steps, resets finished
games at once and seeds each episode, so that a seeded evaluation episode is the same
game whatever the batch.
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
    """A game id gymnasium does not know; the message suggests close names."""


def atari_ids() -> list[str]:
    """Every ALE game id registered with gymnasium (v4 and ALE/*-v5 families)."""
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
    """Size of the game's minimal action set (6 for Pong, 4 for Breakout)."""
    env = make_env(env_id)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


class AtariBatch:
    """K games in lockstep: `frames` (L, 210, 160, 3) uint8 and `obs` (L, 1, 80, 80)
    float32 are those of the L games still playing (all K, unless `episodes` is set).

    Episode i of the batch is reset with seed + i: the first K at once, the next ones
    as games finish. Without `episodes` (a worker) the games play on forever, and
    only the first K episodes are seeded: later ones continue their environment's
    random stream. With `episodes` (evaluation) every episode is seeded, so episode i
    is the same game whatever the batch size; a game retires when no episode is
    left, and `results[i]` is episode i's (raw score, length).

    Book: chapter 1.
    """

    def __init__(
        self,
        env_id,
        num_envs,
        seed,
        max_episode_steps,
        reward_clip=1.0,
        episodes=None,
        render_mode=None,
    ):
        if episodes is not None:
            num_envs = min(num_envs, episodes)
        self.envs = [make_env(env_id, render_mode) for _ in range(num_envs)]
        self.seed, self.episodes, self.started = seed, episodes, num_envs
        self.max_episode_steps, self.reward_clip = max_episode_steps, reward_clip
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)  # raw score so far
        self.episode = list(range(num_envs))  # episode each game plays; None: retired
        self.results = [None] * (episodes or 0)  # (raw score, length) of episode i
        frames = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self.frames = np.stack(frames)  # (K, 210, 160, 3)
        self.obs = prepro(self.frames)  # (K, 1, 80, 80)

    @property
    def live(self) -> list[int]:
        """The games still playing, in order: all K unless `episodes` ran out."""
        return [k for k, episode in enumerate(self.episode) if episode is not None]

    def step(self, actions: np.ndarray):
        """Act in every live game, `actions` (L) in `live` order. Returns their
        clipped rewards (L), dones (L) and the episodes that finished as (raw return,
        length) pairs; `frames` and `obs` now show the games still playing."""
        frames, rewards, dones, finished = [], [], [], []
        for k, action in zip(self.live, actions):
            frame, reward, terminated, truncated, _ = self.envs[k].step(int(action))
            self.lengths[k] += 1
            self.returns[k] += reward
            done = terminated or truncated or self.lengths[k] >= self.max_episode_steps
            if done:
                finished.append((float(self.returns[k]), int(self.lengths[k])))
                frame = self.next_episode(k, finished[-1])
            if frame is not None:
                frames.append(frame)
            rewards.append(reward)
            dones.append(done)
        self.frames = np.stack(frames) if frames else self.frames[:0]
        self.obs = prepro(self.frames)
        clipped = np.clip(
            np.asarray(rewards, dtype=np.float32), -self.reward_clip, self.reward_clip
        )
        return clipped, np.asarray(dones), finished

    def next_episode(self, k: int, result: tuple[float, int]):
        """Keep the `result` of game k's episode and reset the game for the batch's
        next episode; returns its first frame, or None if no episode is left for it
        (the game retires)."""
        if self.episodes is not None:
            self.results[self.episode[k]] = result
        self.lengths[k], self.returns[k] = 0, 0.0
        episode, self.started = self.started, self.started + 1
        if self.episodes is None:  # a worker's game: new games on every reset
            self.episode[k] = episode
            return self.envs[k].reset()[0]
        self.episode[k] = episode if episode < self.episodes else None
        if self.episode[k] is None:
            return None
        return self.envs[k].reset(seed=self.seed + episode)[0]

    def close(self):
        for env in self.envs:
            env.close()
