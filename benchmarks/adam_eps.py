"""Where Adam's eps would act: the size of its denominator in trained runs.

Adam steps each weight by lr * m / (sqrt(v) + eps), where v is a running mean of
that weight's squared gradient (chapter 4). eps changes a step only where sqrt(v) is
not far above it. This reads v from training checkpoints (no training) and reports,
per layer, the smallest and the median sqrt(v), and for each eps the share of the
weights whose step it would shorten by more than a tenth (sqrt(v) < 9 eps).

The loss is summed over the rollout and over a worker's games (chapter 3). Its mean
over those rollout_len x envs_per_worker samples divides every gradient, and sqrt(v),
by that count; Adam's step does not change with the gradient's scale except through
eps, so with the learning rate unchanged the mean is the sum with eps multiplied by
the count (and the gradient clip divided by it, which items 26 and 37 of
benchmarks/learning_speed measured). One reading answers both of issue 19's levers,
Adam's eps and the loss as a sum or a mean:

    python benchmarks/adam_eps.py pretrained/pong-v4 pretrained/breakout-v4 \\
        pretrained/spaceinvaders-v4 runs/learning-speed/pong-plateau-2core \\
        --out benchmarks/adam_eps.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from a3c_core.checkpoint import CheckpointError, load_training_checkpoint
from a3c_core.runs import FileAccessError, check_writable, write_atomically

EPS = (1e-8, 1e-6, 1e-5, 1e-4, 1e-3)  # torch's default first; PPO codes use 1e-5


def denominators(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A training checkpoint's config and sqrt(v) of each parameter, by name.

    The optimizer's state is listed in the order of the model's parameters, which
    is the order of the saved weights (the network has no buffers)."""
    state = load_training_checkpoint(run_dir)
    saved = state["optimizer"].get("state", {})
    names = list(state["model"])
    if len(saved) != len(names) or not all(
        isinstance(saved.get(i), dict)
        and isinstance(saved[i].get("exp_avg_sq"), torch.Tensor)
        and saved[i]["exp_avg_sq"].shape == state["model"][name].shape
        for i, name in enumerate(names)
    ):
        raise CheckpointError(
            f"{run_dir} has no Adam state that fits its weights: use another run folder"
        )
    roots = {
        name: saved[i]["exp_avg_sq"].float().sqrt() for i, name in enumerate(names)
    }
    return state["config"], roots


def shortened(roots: dict[str, torch.Tensor], eps: float) -> float:
    """The share of all weights whose Adam step eps shortens by more than a tenth:
    sqrt(v) / (sqrt(v) + eps) < 0.9, that is sqrt(v) < 9 eps."""
    flat = torch.cat([r.flatten() for r in roots.values()])
    return (flat < 9 * eps).double().mean().item()


def reading(run_dir: Path, eps_values) -> dict:
    """One run's layers (smallest and median sqrt(v)) and shares per eps, for the
    summed loss and for its mean over the samples of an update."""
    config, roots = denominators(run_dir)
    samples = config["rollout_len"] * config["envs_per_worker"]
    return {
        "run": str(run_dir),
        "env_id": config["env_id"],
        "samples_per_update": samples,
        "layers": {
            name: {"min": r.min().item(), "median": r.median().item()}
            for name, r in roots.items()
        },
        "shortened_sum": {str(e): shortened(roots, e) for e in eps_values},
        "shortened_mean": {str(e): shortened(roots, e * samples) for e in eps_values},
    }


def print_reading(r: dict) -> None:
    smallest = min(r["layers"].items(), key=lambda item: item[1]["min"])
    print(
        f"{r['run']} ({r['env_id']}, {r['samples_per_update']} samples per update): "
        f"smallest sqrt(v) {smallest[1]['min']:.1e} ({smallest[0]}, median "
        f"{smallest[1]['median']:.1e})"
    )
    for eps in r["shortened_sum"]:
        print(
            f"  eps {float(eps):.0e}: steps shortened by more than a tenth for "
            f"{r['shortened_sum'][eps]:.3%} of the weights with the summed loss, "
            f"{r['shortened_mean'][eps]:.3%} with its mean"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders to read")
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPS))
    parser.add_argument("--out", type=Path, help="write the readings as JSON here")
    args = parser.parse_args(argv)
    if not all(0 < e < float("inf") for e in args.eps):
        parser.error("--eps must be finite numbers > 0")
    try:
        if args.out:
            check_writable(args.out)  # before the work, not after
        readings = [reading(run, args.eps) for run in args.runs]
    except (FileAccessError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for r in readings:
        print_reading(r)
    if args.out:
        command = " ".join(["python benchmarks/adam_eps.py", *(argv or sys.argv[1:])])
        text = json.dumps({"command": command, "runs": readings}, indent=1) + "\n"
        write_atomically(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
