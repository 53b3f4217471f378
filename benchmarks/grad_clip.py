"""How often the gradient clip binds, by games per worker.

A worker's loss is summed over its rollout and over its games (chapter 3), so the
gradient it hands to the shared optimizer grows with `envs_per_worker`, while the
clip (`max_grad_norm`, 40 as in the seed, which had one game per worker) stays put.
This plays one agent's policy for `--updates` rollouts per games-per-worker value
and reports the gradient norm of each rollout's loss before the clip, and the share
of updates the clip would have shortened:

    python benchmarks/grad_clip.py --env Pong-v4 --model pretrained/pong-v4 \\
        --games 1 2 4 8 --out benchmarks/grad_clip.json

The agent does not learn between rollouts: each norm is the gradient an update from
that rollout would start from. The first `--warmup` rollouts of each value are
played, not measured (every game starts at its first frame).
"""

import argparse
import dataclasses
import json
import queue
import statistics
import sys
from pathlib import Path

import torch

from a3c_core.checkpoint import CheckpointError, load_agent_and_config
from a3c_core.envs import AtariBatch, UnknownEnvError
from a3c_core.runs import FileAccessError, check_writable, write_atomically
from a3c_core.worker import collect, learn


def grad_norms(model, cfg, games: int, updates: int, warmup: int) -> list[float]:
    """The loss gradient's norm (before the clip) of `updates` rollouts of `games`
    games, played with the model's sampled actions after `warmup` rollouts."""
    unclipped = sys.float_info.max  # config refuses inf; this clip never binds
    cfg = dataclasses.replace(cfg, envs_per_worker=games, max_grad_norm=unclipped)
    envs = AtariBatch(
        cfg.env_id, games, cfg.seed, cfg.max_episode_steps, cfg.reward_clip
    )
    hx, new_episode = model.initial_state(games), torch.ones(games, dtype=torch.bool)
    generator, episodes = torch.Generator().manual_seed(cfg.seed), queue.Queue()
    norms = []
    for i in range(warmup + updates):
        rollout, hx, new_episode = collect(
            model, envs, hx, new_episode, cfg.rollout_len, generator, episodes
        )
        with torch.no_grad():
            bootstrap, _, _ = model(torch.from_numpy(envs.obs), hx)
        learn(model, rollout, bootstrap, cfg)  # grads of this rollout's loss
        if i >= warmup:
            grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
            norms.append(torch.stack(grads).norm().item())
    envs.close()
    return norms


def summary(norms: list[float], clip: float) -> dict:
    """Median and 90th percentile of the norms, and the share above `clip`."""
    return {
        "median": statistics.median(norms),
        "p90": statistics.quantiles(norms, n=10, method="inclusive")[-1],
        "clipped": sum(n > clip for n in norms) / len(norms),
        "updates": len(norms),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pong-v4")
    parser.add_argument("--model", help="model.pt, checkpoint.pt or a run folder")
    parser.add_argument("--games", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.games) < 1 or args.updates < 2 or args.warmup < 0:
        parser.error("--games must be >= 1, --updates >= 2 and --warmup >= 0")
    try:
        if args.out:
            check_writable(args.out)  # before the work, not after
        model, cfg = load_agent_and_config(args.env, args.model)
    except (FileAccessError, CheckpointError, UnknownEnvError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as one worker
    results = {}
    for games in args.games:
        norms = grad_norms(model, cfg, games, args.updates, args.warmup)
        results[games] = summary(norms, cfg.max_grad_norm)
        r = results[games]
        print(
            f"games per worker {games}: gradient norm median {r['median']:.1f}, "
            f"90th percentile {r['p90']:.1f}; above the clip ({cfg.max_grad_norm:g}) "
            f"in {r['clipped']:.0%} of {r['updates']} updates",
            flush=True,
        )
    if args.out:
        command = " ".join(["python benchmarks/grad_clip.py", *(argv or sys.argv[1:])])
        record = {"env_id": args.env, "model": args.model, "clip": cfg.max_grad_norm}
        record |= {"warmup": args.warmup, "games": results, "command": command}
        text = json.dumps(record, indent=1) + "\n"
        write_atomically(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
