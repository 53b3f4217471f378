"""Watch and evaluate agents (chapter 6).

`play_episode` plays one game and can record frames, values, action probabilities
and rewards, `evaluate` plays many seeded episodes with a batch of environments (one
forward pass for all of them), `evaluate_parallel` splits them over processes, and
`summarize` turns episode scores into the numbers we report: mean, std, min, max
and mean length. Both players are short loops over an `AtariBatch` and
`choose_actions`; `a3c_core.checkpoint.load_agent` loads the agents they play.
"""

import math
import multiprocessing as mp
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import A3CConfig
from .envs import AtariBatch
from .policy import choose_actions
from .runs import write_atomically

MAX_EPISODE_STEPS = A3CConfig().max_episode_steps  # the cap for agents without config


@dataclass
class Episode:
    """One game: raw score, length and, if recorded, what the agent saw and did."""

    score: float = 0.0
    length: int = 0
    frames: list = field(default_factory=list)  # raw RGB frames (210, 160, 3)
    values: list = field(default_factory=list)  # V(s_t)
    probs: list = field(default_factory=list)  # pi(. | s_t), (A,)
    rewards: list = field(default_factory=list)  # raw r_t after the action at step t


@torch.no_grad()
def play_episode(
    model,
    env_id,
    seed=0,
    greedy=False,
    record=False,
    render=False,
    max_steps=MAX_EPISODE_STEPS,
):
    """Play one episode (at most `max_steps` agent steps: pass the agent's own
    `max_episode_steps`) reset with `seed`, drawing actions from a generator seeded
    `seed`; can record frames, values, action probabilities and raw rewards.

    Book: chapter 6.
    """
    render_mode = "human" if render else None
    game = AtariBatch(
        env_id, 1, seed, max_steps, math.inf, episodes=1, render_mode=render_mode
    )
    generator = torch.Generator().manual_seed(seed)
    hx, episode = model.initial_state(1), Episode()
    while game.live:
        values, logits, hx = model(torch.from_numpy(game.obs), hx)
        if record:
            episode.frames.append(game.frames[0])
            episode.values.append(values.item())
            episode.probs.append(F.softmax(logits, -1)[0].numpy())
        rewards, _, _ = game.step(choose_actions(logits, greedy, generator).numpy())
        if record:
            episode.rewards.append(float(rewards[0]))  # raw: no clip (math.inf)
    game.close()
    episode.score, episode.length = game.results[0]
    return episode


@torch.no_grad()
def evaluate(
    model,
    env_id,
    episodes=30,
    seed=0,
    greedy=False,
    num_envs=8,
    max_steps=MAX_EPISODE_STEPS,
):
    """Scores of `episodes` games, played in batches of `num_envs` environments.

    Episode i is reset with seed + i and draws its actions from a generator seeded
    seed + i, so it is the game `play_episode(model, env_id, seed + i)` plays, whatever
    the batch. Returns a list of (score, length) in episode order.

    Book: chapter 6.
    """
    games = AtariBatch(env_id, num_envs, seed, max_steps, math.inf, episodes=episodes)
    hx = model.initial_state(len(games.envs))  # (K, H)
    draws = [torch.Generator().manual_seed(seed + i) for i in games.episode]
    # Only the games still playing go through the network: finished ones cost nothing.
    while live := games.live:
        _, logits, hx[live] = model(torch.from_numpy(games.obs), hx[live])
        actions = choose_actions(logits, greedy, [draws[k] for k in live])
        _, dones, _ = games.step(actions.numpy())
        for k in np.asarray(live)[dones]:  # a new episode, or none: the game retired
            hx[k] = 0.0
            if games.episode[k] is not None:
                draws[k] = torch.Generator().manual_seed(seed + games.episode[k])
    games.close()
    return games.results


def _evaluate_block(model, env_id, episodes, seed, greedy, max_steps):
    torch.set_num_threads(1)  # one process per core
    return evaluate(model, env_id, episodes, seed, greedy, max_steps=max_steps)


def evaluate_parallel(
    model,
    env_id,
    episodes=30,
    seed=0,
    greedy=False,
    processes=2,
    max_steps=MAX_EPISODE_STEPS,
):
    """`evaluate` split into blocks of consecutive episodes, one process each: the
    same results (episode i depends only on seed + i), faster on several cores."""
    sizes = [len(b) for b in np.array_split(range(episodes), processes) if len(b)]
    if len(sizes) <= 1:
        return evaluate(model, env_id, episodes, seed, greedy, max_steps=max_steps)
    starts = np.cumsum([seed, *sizes[:-1]]).tolist()
    blocks = [
        (model, env_id, n, start, greedy, max_steps) for n, start in zip(sizes, starts)
    ]
    with mp.get_context("spawn").Pool(len(blocks)) as pool:
        parts = pool.starmap(_evaluate_block, blocks)
    return [result for part in parts for result in part]


def summarize(results) -> dict:
    """mean, std (population), min, max of scores and mean length of (score, length).

    Book: chapter 6.
    """
    scores = [score for score, _ in results]
    return {
        "episodes": len(results),
        "mean": statistics.fmean(scores),
        "std": statistics.pstdev(scores),
        "min": min(scores),
        "max": max(scores),
        "mean_length": statistics.fmean(length for _, length in results),
    }


def save_gif(frames, path, every=2, scale=0.5, fps=30) -> Path:
    """Write every `every`-th frame, scaled, as a looping GIF (kept small for git)."""
    images = []
    for frame in frames[::every]:
        image = Image.fromarray(frame)
        size = (int(image.width * scale), int(image.height * scale))
        images.append(image.resize(size, Image.NEAREST).quantize(colors=32))
    path = Path(path)
    write_atomically(  # a full disk leaves no half GIF
        path,
        lambda f: images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 * every / fps),
            loop=0,
            optimize=True,
        ),
    )
    return path
