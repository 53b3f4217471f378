"""The command line: `python -m a3c_core train|play|evaluate|results` (chapter 5).

Training flags are generated from `A3CConfig`, one flag per field with the field's
docstring as help, so the CLI cannot drift from the config. Each subcommand is one
`cmd_*` handler. Bad input (an unknown game, a missing or corrupt checkpoint, a
nonsense hyperparameter, a folder that cannot be written or is in use by another
trainer) ends with one line on stderr and exit code 2.
"""

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_agent_and_config, load_training_checkpoint
from .config import SEED_PRESET, A3CConfig, ConfigError, field_docs
from .distributed import cmd_train as cmd_train_rank
from .distributed import world_from_env
from .envs import UnknownEnvError, check_env_id
from .play import evaluate_parallel, play_episode, save_gif, summarize
from .runs import (
    PRETRAINED,
    check_writable,
    game_dir,
    training_info,
    write_atomically,
)
from .train import TrainingError, train

# OSError: FileAccessError, and any other file-system error, still one line that
# names the path
USAGE_ERRORS = (ConfigError, UnknownEnvError, CheckpointError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, like ours."""

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the error into one line)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per A3CConfig field; unset flags stay absent (argparse.SUPPRESS).

    Book: chapter 5.
    """
    docs = field_docs()
    for f in dataclasses.fields(A3CConfig):
        flags = [f"--{f.name.replace('_', '-')}"] + (
            ["--env"] if f.name == "env_id" else []
        )
        kind = (
            float
            if f.type in (float, "float")
            else int
            if f.type in (int, "int")
            else str
        )
        parser.add_argument(
            *flags,
            dest=f.name,
            type=kind,
            default=argparse.SUPPRESS,
            help=f"{docs.get(f.name, '')} (default: {f.default})",
        )


def default_run_dir(env_id: str) -> Path:
    """runs/pong-v4 for Pong-v4, runs/ale-pong-v5 for ALE/Pong-v5."""
    return Path("runs") / game_dir(env_id)


def train_config(
    args: argparse.Namespace, saved: dict | None = None
) -> tuple[A3CConfig, Path, bool]:
    """The run's config: saved config (when resuming) or preset, then explicit flags.
    `saved`: the resumed run's config as rank 0 read it (a3c_core.distributed)."""
    explicit = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(A3CConfig)
        if hasattr(args, f.name)
    }
    if args.resume:
        saved = saved or load_training_checkpoint(args.resume)["config"]
        base = A3CConfig.from_dict(saved)
        if explicit.get("env_id", base.env_id) != base.env_id:
            raise ConfigError(
                f"{args.resume} trains {base.env_id}, not {explicit['env_id']}"
            )
        run_dir = Path(args.resume)
    else:
        base = SEED_PRESET if args.preset == "seed" else A3CConfig()
        run_dir = None
    cfg = dataclasses.replace(base, **explicit)
    check_env_id(cfg.env_id)
    run_dir = run_dir or Path(args.run_dir or default_run_dir(cfg.env_id))
    return cfg, run_dir, bool(args.resume)


def cmd_train(args) -> int:
    """`train`: build the config from flags (and the saved run), then train."""
    world = world_from_env()  # set by torchrun: this process is one rank of several
    if world is not None:
        return cmd_train_rank(args, world, train_config)
    cfg, run_dir, resume = train_config(args)
    print(
        f"{'resuming' if resume else 'training'} {cfg.env_id} in {run_dir}", flush=True
    )
    progress = train(cfg, run_dir, resume=resume, show_progress=not args.no_progress)
    print(f"stopped at {progress.agent_steps} agent steps; checkpoint in {run_dir}")
    return 0


def cmd_play(args) -> int:
    """`play`: watch episodes, print scores, write the first one as a GIF."""
    torch.set_num_threads(1)  # one game at a time: leave the other cores alone
    if args.gif:
        check_writable(args.gif)  # now, not after the episodes
    model, config = load_agent_and_config(args.env_id, args.checkpoint, args.force)
    results = []
    for i in range(args.episodes):
        record = bool(args.gif) and i == 0
        ep = play_episode(
            model,
            args.env_id,
            args.seed + i,
            args.greedy,
            record,
            args.render,
            max_steps=config.max_episode_steps,
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


def cmd_evaluate(args) -> int:
    """`evaluate`: score many seeded episodes; the summary as JSON (eval.json)."""
    torch.set_num_threads(1)  # --processes alone decides how many cores are used
    if args.out:
        check_writable(args.out)  # now, not after minutes of episodes
    model, config = load_agent_and_config(args.env_id, args.checkpoint, args.force)
    results = evaluate_parallel(
        model,
        args.env_id,
        args.episodes,
        args.seed,
        args.greedy,
        args.processes,
        max_steps=config.max_episode_steps,
    )
    checkpoint = Path(args.checkpoint or PRETRAINED / game_dir(args.env_id))
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    report = {
        "env_id": args.env_id,
        "policy": "greedy" if args.greedy else "sampled",
        "seed": args.seed,
        **summarize(results),
        "scores": [score for score, _ in results],
        "trained": training_info(run_dir),
        "date": datetime.date.today().isoformat(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        write_atomically(args.out, lambda f: f.write((text + "\n").encode()))
    return 0


def cmd_results(args) -> int:
    """`results`: print (and write into the README) the results table."""
    from .results import load_evals, results_markdown, update_readme

    evals = load_evals()
    print(results_markdown(evals))
    if args.write_readme:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        changed = update_readme(readme, evals)
        print(f"{readme}: {'updated' if changed else 'already up to date'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = OneLineParser(
        prog="python -m a3c_core", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent (Hogwild A3C on all cores)")
    add_config_flags(train)
    where = train.add_mutually_exclusive_group()
    where.add_argument(
        "--run-dir", help="folder for checkpoint, log and config (default: runs/<game>)"
    )
    where.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR"
    )
    train.add_argument(
        "--preset",
        choices=["default", "seed"],
        default="default",
        help="start from our defaults or from baby-a3c's (20 workers, lr 1e-4)",
    )
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar (log lines only)"
    )
    train.set_defaults(func=cmd_train)

    for name, func, what in (
        ("play", cmd_play, "watch an agent play"),
        ("evaluate", cmd_evaluate, "score an agent over many episodes"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument(
            "--env", dest="env_id", default="Pong-v4", help="game id (default: Pong-v4)"
        )
        p.add_argument(
            "--checkpoint",
            help="model.pt, checkpoint.pt, run folder or baby-a3c .tar "
            "(default: pretrained/<game>/)",
        )
        p.add_argument(
            "--episodes", type=positive_int, default=1 if name == "play" else 30
        )
        p.add_argument(
            "--greedy", action="store_true", help="most likely action, not sampled"
        )
        p.add_argument(
            "--seed", type=int, default=0, help="episode i is reset with seed + i"
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="play a checkpoint recorded for another game (same action count)",
        )
        p.set_defaults(func=func)
        if name == "play":
            p.add_argument(
                "--gif", help="write the first episode as an animated GIF here"
            )
            p.add_argument(
                "--render", action="store_true", help="show the game in a window"
            )
        else:
            p.add_argument(
                "--out", help="write the summary as JSON here (e.g. eval.json)"
            )
            p.add_argument(
                "--processes",
                type=positive_int,
                default=1,
                help="play in this many processes, one core each (same results)",
            )
    results = sub.add_parser(
        "results", help="results table from pretrained/*/eval.json"
    )
    results.add_argument("--write-readme", action="store_true", help="update README.md")
    results.set_defaults(func=cmd_results)
    return parser


def main(argv=None) -> int:
    """Run the command line; usage errors end with one line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except TrainingError as error:  # a worker died or the loss became NaN
        print(f"error: {error}", file=sys.stderr)
        return 1
