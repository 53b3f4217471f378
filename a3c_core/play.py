"""Watch and evaluate agents (chapter 6).

`load_agent` finds and checks a checkpoint (ours or baby-a3c's original `.tar`),
`play_episode` plays one game with a single environment and can record frames,
values and action probabilities, `evaluate` plays many seeded episodes with a batch
of environments (one forward pass for all of them), and `summarize` turns episode
scores into the numbers we report: mean, std, min, max and mean length.
"""

import datetime
import json
import multiprocessing as mp
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import LOG, CheckpointError, load_weights
from .config import A3CConfig
from .envs import check_env_id, make_env, num_actions
from .network import ActorCritic
from .preprocess import prepro

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
MAX_EPISODE_STEPS = A3CConfig().max_episode_steps


def game_dir(env_id: str) -> str:
    """pong-v4 for Pong-v4; ale-pong-v5 for ALE/Pong-v5.

    Book: chapter 6.
    """
    return env_id.lower().replace("/", "-")


def load_agent(env_id: str, checkpoint=None) -> ActorCritic:
    """The network for `env_id` from `checkpoint` (default: pretrained/<game>/).

    Book: chapter 6.
    """
    check_env_id(env_id)
    path = Path(checkpoint) if checkpoint else PRETRAINED / game_dir(env_id)
    if checkpoint is None and not path.exists():
        raise CheckpointError(
            f"no pretrained agent for {env_id}: pass --checkpoint PATH"
        )
    weights, config = load_weights(path)
    if config is not None and config.env_id != env_id:
        raise CheckpointError(
            f"{path} is an agent for {config.env_id}, not {env_id}: "
            f"pass --env {config.env_id} or another --checkpoint"
        )
    actions = num_actions(env_id)
    found = weights.get("actor_linear.weight")
    if found is None or found.shape[0] != actions:
        have = "no policy head" if found is None else f"{found.shape[0]} actions"
        raise CheckpointError(
            f"{path} has {have}, but {env_id} has {actions}: wrong game"
        )
    hidden = weights["gru.weight_hh"].shape[1] if "gru.weight_hh" in weights else 256
    model = ActorCritic(actions, hidden)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit the network: {str(e).splitlines()[0]}"
        ) from None
    return model.to(memory_format=torch.channels_last).eval()  # faster convolutions


def choose_actions(logits: torch.Tensor, greedy: bool, generator) -> torch.Tensor:
    """Sampled (as the seed played) or most likely actions; logits (B, A) -> (B).

    Book: chapter 6.
    """
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)


@dataclass
class Episode:
    """One game: raw score, length, and optionally what the agent saw, thought and got.

    Book: chapter 6.
    """

    score: float = 0.0
    length: int = 0
    frames: list = field(default_factory=list)  # raw RGB frames (210, 160, 3)
    values: list = field(default_factory=list)  # V(s_t)
    probs: list = field(default_factory=list)  # pi(. | s_t), (A,)
    rewards: list = field(default_factory=list)  # raw r_t after the action at step t


@torch.no_grad()
def play_episode(
    model, env_id, seed=0, greedy=False, record=False, render=False, max_steps=None
):
    """Play one episode (at most `max_steps` agent steps, default the training cap)
    with one environment; can record frames, values, action probabilities and rewards.

    Book: chapter 6.
    """
    env = make_env(env_id, render_mode="human" if render else None)
    generator = torch.Generator().manual_seed(seed)
    frame, _ = env.reset(seed=seed)
    hx, episode, done = model.initial_state(1), Episode(), False
    while not done and episode.length < (max_steps or MAX_EPISODE_STEPS):
        obs = torch.from_numpy(prepro(frame)).unsqueeze(0)  # (1, 1, 80, 80)
        value, logits, hx = model(obs, hx)
        if record:
            episode.frames.append(frame)
            episode.values.append(value.item())
            episode.probs.append(F.softmax(logits, -1)[0].numpy())
        action = choose_actions(logits, greedy, generator)
        frame, reward, terminated, truncated, _ = env.step(int(action))
        if record:
            episode.rewards.append(reward)
        episode.score += reward
        episode.length += 1
        done = terminated or truncated
    env.close()
    return episode


@torch.no_grad()
def evaluate(model, env_id, episodes=30, seed=0, greedy=False, num_envs=8):
    """Scores of `episodes` games, played in batches of `num_envs` environments.

    Episode i is reset with seed + i and draws its actions from a generator seeded
    seed + i, so it is the game `play_episode(model, env_id, seed + i)` plays, whatever
    the batch. Returns a list of (score, length) in episode order.

    Book: chapter 6.
    """
    envs = [make_env(env_id) for _ in range(min(num_envs, episodes))]
    results = [None] * episodes
    slot_episode = list(range(len(envs)))  # which episode each environment plays
    frames = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    draws = [torch.Generator().manual_seed(seed + i) for i in range(len(envs))]
    hx = model.initial_state(len(envs))
    scores, lengths = np.zeros(len(envs)), np.zeros(len(envs), dtype=int)
    next_episode = len(envs)
    # Only the slots still playing go through the network: finished ones cost nothing.
    while live := [k for k, i in enumerate(slot_episode) if i is not None]:
        _, logits, hx[live] = model(torch.from_numpy(prepro(frames[live])), hx[live])
        for j, k in enumerate(live):
            action = choose_actions(logits[j : j + 1], greedy, draws[k])
            frames[k], reward, terminated, truncated, _ = envs[k].step(int(action))
            scores[k] += reward
            lengths[k] += 1
            if terminated or truncated or lengths[k] >= MAX_EPISODE_STEPS:
                results[slot_episode[k]] = (float(scores[k]), int(lengths[k]))
                scores[k], lengths[k], hx[k] = 0.0, 0, 0.0
                slot_episode[k] = next_episode if next_episode < episodes else None
                if slot_episode[k] is not None:
                    frames[k] = envs[k].reset(seed=seed + next_episode)[0]
                    draws[k] = torch.Generator().manual_seed(seed + next_episode)
                    next_episode += 1
    for env in envs:
        env.close()
    return results


def _evaluate_block(model, env_id, episodes, seed, greedy):
    torch.set_num_threads(1)  # one process per core
    return evaluate(model, env_id, episodes, seed, greedy)


def evaluate_parallel(model, env_id, episodes=30, seed=0, greedy=False, processes=2):
    """`evaluate` split into blocks of consecutive episodes, one process each: the
    same results (episode i depends only on seed + i), faster on several cores.

    Book: chapter 6.
    """
    sizes = [len(b) for b in np.array_split(range(episodes), processes) if len(b)]
    if len(sizes) <= 1:
        return evaluate(model, env_id, episodes, seed, greedy)
    starts = np.cumsum([seed, *sizes[:-1]]).tolist()
    blocks = [(model, env_id, n, start, greedy) for n, start in zip(sizes, starts)]
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
    """Write every `every`-th frame, scaled, as a looping GIF (kept small for git).

    Book: chapter 6.
    """
    images = []
    for frame in frames[::every]:
        image = Image.fromarray(frame)
        size = (int(image.width * scale), int(image.height * scale))
        images.append(image.resize(size, Image.NEAREST).quantize(colors=32))
    path = Path(path)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=int(1000 * every / fps),
        loop=0,
        optimize=True,
    )
    return path


def training_info(checkpoint_dir: Path) -> dict:
    """Agent steps and wall-clock hours of training, from the log.csv beside a model.

    Book: chapter 6.
    """
    log = checkpoint_dir / LOG
    if not log.is_file():
        return {}
    lines = log.read_text().strip().splitlines()
    if len(lines) < 2:
        return {}
    last = dict(zip(lines[0].split(","), lines[-1].split(",")))
    return {
        "agent_steps": int(last["agent_steps"]),
        "hours": round(float(last["elapsed_s"]) / 3600, 2),
    }


def _checkpoint_dir(args) -> Path:
    path = (
        Path(args.checkpoint) if args.checkpoint else PRETRAINED / game_dir(args.env_id)
    )
    return path if path.is_dir() else path.parent


def play_command(args) -> int:
    """`python -m a3c_core play`: watch episodes, print scores, write a GIF.

    Book: chapter 6.
    """
    torch.set_num_threads(1)  # one game at a time: leave the other cores alone
    model = load_agent(args.env_id, args.checkpoint)
    results = []
    for i in range(args.episodes):
        record = bool(args.gif) and i == 0
        ep = play_episode(
            model, args.env_id, args.seed + i, args.greedy, record, args.render
        )
        results.append((ep.score, ep.length))
        print(f"episode {i + 1}: score {ep.score:g}, length {ep.length} agent steps")
        if record:
            print(f"wrote {save_gif(ep.frames, args.gif)}")
    s = summarize(results)
    print(
        f"{s['episodes']} episodes: mean {s['mean']:.2f} +- {s['std']:.2f} "
        f"(min {s['min']:g}, max {s['max']:g}), mean length {s['mean_length']:.0f}"
    )
    return 0


def evaluate_command(args) -> int:
    """`python -m a3c_core evaluate`: score many seeded episodes as JSON.

    Book: chapter 6.
    """
    torch.set_num_threads(1)  # --processes alone decides how many cores are used
    model = load_agent(args.env_id, args.checkpoint)
    results = evaluate_parallel(
        model, args.env_id, args.episodes, args.seed, args.greedy, args.processes
    )
    report = {
        "env_id": args.env_id,
        "policy": "greedy" if args.greedy else "sampled",
        "seed": args.seed,
        **summarize(results),
        "scores": [score for score, _ in results],
        "trained": training_info(_checkpoint_dir(args)),
        "date": datetime.date.today().isoformat(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
