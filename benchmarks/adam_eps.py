"""Where Adam's eps would act: the size of its denominator in trained runs.

Adam steps each weight by lr * m / (sqrt(v) + eps), where v is a running mean of
that weight's squared gradient, corrected for its start at 0 (chapter 4). eps
changes a step only where sqrt(v) is not far above it. This reads v from training
checkpoints (no training; the state at the checkpoint, not along the run) and
reports, per layer, the smallest and the median sqrt(v), and for each eps the share
of the weights whose step it would shorten by more than a tenth (sqrt(v) < 9 eps).

The loss is summed over the rollout and over a group of a worker's games (chapter
3). Its mean over those N samples divides every gradient, and sqrt(v), by N; Adam's
step does not change with a scale that all gradients share except through eps and
the gradient clip. So at the same learning rate the mean is the sum with eps
multiplied by N and the clip multiplied by N too: at the default's clip of 40 and N
of 160, a clip of 6,400 on the sum, which never binds (benchmarks/learning_speed
items 22 and 26 measured the clip's scale). One reading answers both of issue 19's
levers, Adam's eps and the loss as a sum or a mean:

    python benchmarks/adam_eps.py pretrained/pong-v4 pretrained/breakout-v4 \\
        pretrained/spaceinvaders-v4 runs/learning-speed/pong-plateau-2core \\
        --out benchmarks/adam_eps.json
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from a3c_core.checkpoint import CheckpointError, config_from, load_training_checkpoint
from a3c_core.config import A3CConfig
from a3c_core.runs import FileAccessError, check_writable, write_atomically

EPS = (1e-8, 1e-6, 1e-5, 1e-4, 1e-3)  # torch's default first; PPO codes use 1e-5


def corrected_roots(optimizer: dict, weights: dict) -> dict[str, torch.Tensor]:
    """sqrt(v / (1 - beta2^step)) of each weight, by name: the denominator torch's
    Adam divides by (before eps). The optimizer's state is listed in the order of
    the model's parameters, the order of the saved weights (the network has no
    buffers). Raises on any state that does not fit the weights."""
    beta2 = optimizer["param_groups"][0]["betas"][1]
    saved, roots = optimizer["state"], {}
    if len(saved) != len(weights):
        raise ValueError(f"{len(saved)} optimizer states for {len(weights)} weights")
    for i, (name, weight) in enumerate(weights.items()):
        v, step = saved[i]["exp_avg_sq"].double(), float(saved[i]["step"])
        if v.shape != weight.shape or not step >= 1:
            raise ValueError(f"the state of {name} does not fit it")
        roots[name] = (v / (1 - beta2**step)).sqrt().float()
    return roots


def denominators(run_dir: Path) -> tuple[A3CConfig, dict[str, torch.Tensor]]:
    """A training checkpoint's config and the corrected sqrt(v) of its weights."""
    state = load_training_checkpoint(run_dir)
    try:
        roots = corrected_roots(state["optimizer"], state["model"])
    except (
        AttributeError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as error:
        raise CheckpointError(
            f"{run_dir} has no Adam state that fits its weights ({error}): use "
            "another run folder"
        ) from None
    return config_from(state["config"], run_dir), roots


def shortened(roots: dict[str, torch.Tensor], eps: float) -> float:
    """The share of all weights whose Adam step eps shortens by more than a tenth:
    sqrt(v) / (sqrt(v) + eps) < 0.9, that is sqrt(v) < 9 eps."""
    flat = torch.cat([r.flatten() for r in roots.values()])
    return (flat < 9 * eps).double().mean().item()


def reading(run_dir: Path, eps_values) -> dict:
    """One run's layers (smallest and median sqrt(v)) and shares per eps, for the
    summed loss and for its mean over the samples of an update."""
    cfg, roots = denominators(run_dir)
    samples = cfg.agent_steps_per_update
    return {
        "run": str(run_dir),
        "env_id": cfg.env_id,
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
    samples = r["samples_per_update"]
    print(
        f"{r['run']} ({r['env_id']}, {samples} samples per update): "
        f"smallest sqrt(v) {smallest[1]['min']:.1e} ({smallest[0]}, median "
        f"{smallest[1]['median']:.1e})"
    )
    for eps in r["shortened_sum"]:
        print(
            f"  eps {float(eps):g}: steps shortened by more than a tenth for "
            f"{r['shortened_sum'][eps]:.3%} of the weights with the summed loss, "
            f"{r['shortened_mean'][eps]:.3%} with its mean (as eps "
            f"{float(eps) * samples:g} on the sum)"
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
        command = shlex.join(
            ["python", "benchmarks/adam_eps.py", *(argv or sys.argv[1:])]
        )
        text = json.dumps({"command": command, "runs": readings}, indent=1) + "\n"
        write_atomically(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
