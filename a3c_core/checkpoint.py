"""Checkpoints that are never half-written, and clear loading errors (chapter 5).

A training checkpoint (`checkpoint.pt`) holds the model, the shared optimizer's state,
the counters, the config and the number of log rows it covers; `model.pt` beside it
holds the weights alone (the run folder's files are described in `a3c_core.runs`).
Both are written to a temporary file and renamed into place, so a run killed at any
moment leaves the previous complete file. Everything is loaded with
`torch.load(..., weights_only=True)`, and checked before use: a file that would
run code when unpickled is refused as such, and any other damage (a cut or
flipped byte, a wrong type, a bad config.json) is one line saying what to do.

`load_agent` turns any checkpoint into a network ready to play (chapter 6): ours, a
run folder, or one of baby-a3c's original `model.*.tar` files (a bare state dict),
checked against the game it is asked to play.
"""

import contextlib
import dataclasses
import importlib.util
import json
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .config import SEED_PRESET, A3CConfig, ConfigError
from .envs import check_env_id, num_actions
from .network import ActorCritic
from .runs import (
    CHECKPOINT,
    CONFIG,
    MODEL,
    PRETRAINED,
    Progress,
    game_dir,
    write_atomically,
)

TRAINING_PARTS = ("model", "optimizer", "config", "progress")
# modules a checkpoint's pickle may name: torch's tensor rebuilders, OrderedDict
WEIGHT_MODULES = ("torch", "collections")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or for another game; says what to do."""


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename over `path`
    (`a3c_core.runs.write_atomically`): a failed or killed save keeps the old file.

    Book: chapter 5.
    """
    write_atomically(path, lambda f: torch.save(obj, f))


def training_state(model, optimizer, cfg: A3CConfig, progress: dict) -> dict:
    """Everything a resume needs, as copies: weights, the shared optimizer's state,
    config and progress. The copies let the workers go on while they are written;
    the caller makes the copying one consistent moment (`Trainer.save`).
    """
    return {
        "model": _copied(model.state_dict()),
        "optimizer": _copied(optimizer.state_dict()),  # Adam's step and moments
        "config": json.loads(cfg.to_json()),
        "progress": dict(progress),
    }


def _copied(value):
    """`value` with every tensor in it (nested in dicts, lists, tuples) copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().contiguous()  # plain layout, not channels_last
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copied(v) for v in value)
    return value


def save_checkpoint(run_dir, state: dict) -> None:
    """Write a `training_state` into `run_dir` as checkpoint.pt, model.pt (its
    weights alone) and config.json, each atomically.

    Book: chapter 5.
    """
    run_dir = Path(run_dir)
    atomic_save(state, run_dir / CHECKPOINT)
    atomic_save(state["model"], run_dir / MODEL)
    config = json.dumps(state["config"], indent=2) + "\n"
    write_atomically(run_dir / CONFIG, lambda f: f.write(config.encode()))


def _first_line(error: Exception) -> str:
    """An exception as `Type: first line`, at most 100 characters of text."""
    text = str(error)
    # weights_only errors open with a paragraph about torch 2.6; the reason follows
    text = text.split("WeightsUnpickler error:", 1)[-1]
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:100] if lines else ''}".rstrip(": ")


def _torch_load(path: Path):
    """torch.load(path, weights_only=True): tensors and plain containers, never
    code. Every way a file can fail to load is one `CheckpointError` line."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. an odd pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise CheckpointError(
            f"cannot read {path} ({error.strerror}): check its permissions"
        ) from None
    except Exception as error:  # damaged bytes fail in many ways: KeyError, ...
        code = _code_in(path, error)
        if code:
            raise CheckpointError(
                f"{path} contains code ({code}), not only weights, and was not "
                "loaded: use a checkpoint from a source you trust"
            ) from None
        raise CheckpointError(
            f"cannot read {path} ({_first_line(error)}): the file is corrupt or "
            "not a torch checkpoint; use another checkpoint"
        ) from None


def _code_in(path: Path, error: Exception) -> str | None:
    """The first function or class (module.name) beyond torch's tensors that
    unpickling `path` would import, or None: what weights_only refused, named by
    its error or found in the pickle (a raw pickle or a torch zip's data.pkl).
    A module that does not exist is a damaged name, not code."""
    named = re.search(r"GLOBAL (\S+)", str(error))
    found, strings = [named.group(1)] if named else [], []
    with contextlib.suppress(Exception):  # a damaged pickle: report what was read
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(pkl[0])
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))  # module and name, pushed
            elif isinstance(arg, str):
                strings.append(arg)
    for name in found:
        module = name.split(".")[0]
        if not module.isidentifier() or module in WEIGHT_MODULES:
            continue
        if importlib.util.find_spec(module):  # a top-level name: locate, no import
            return name
    return None


def config_from(values, source) -> A3CConfig:
    """The `A3CConfig` stored in `source` (a checkpoint or a config.json), or a
    `CheckpointError` saying that it holds none."""
    try:
        if not isinstance(values, dict):
            raise ConfigError(f"expected a JSON object, got {type(values).__name__}")
        return A3CConfig.from_dict(values)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(
            f"{source} holds no valid config ({_first_line(error)}): use another "
            "checkpoint, or fix its config"
        ) from None


def read_config_json(path: Path) -> A3CConfig:
    """The `A3CConfig` in a config.json, or a one-line `CheckpointError`."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not JSON
        raise CheckpointError(
            f"cannot read {path} ({_first_line(error)}): it is not a JSON config; "
            "fix it or move it away"
        ) from None
    return config_from(values, path)


def _check_weights(weights, path: Path) -> None:
    if not (
        isinstance(weights, dict)
        and weights
        and all(isinstance(k, str) for k in weights)
        and all(isinstance(v, torch.Tensor) for v in weights.values())
    ):
        raise CheckpointError(f"{path} holds no model weights: use another checkpoint")


def load_training_checkpoint(run_dir) -> dict:
    """The full training state saved in `run_dir` (for --resume), its parts
    checked: weights are tensors, the config is valid, the counts are counts."""
    path = Path(run_dir) / CHECKPOINT
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"no run folder {run_dir}: check the path")
    state = _torch_load(path)
    if not (
        isinstance(state, dict)
        and all(isinstance(state.get(part), dict) for part in TRAINING_PARTS)
    ):
        raise CheckpointError(
            f"{path} is not an a3c_core training checkpoint: use another run folder"
        )
    _check_weights(state["model"], path)
    config_from(state["config"], path)
    progress_from(state["progress"], path)
    return state


def progress_from(saved: dict, path: Path) -> Progress:
    """The checkpoint's `Progress`, or a one-line `CheckpointError`."""
    try:
        return Progress.from_dict(saved)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"{path} holds a damaged progress record ({error}): use another run folder"
        ) from None


def restore_training_state(state: dict, model, optimizer, path: Path) -> Progress:
    """Copy a `load_training_checkpoint` state into the shared model and optimizer;
    returns its `Progress`. A state that does not fit them (another network size,
    a damaged optimizer state) is a one-line `CheckpointError`."""
    try:
        model.load_state_dict(state["model"])
        saved = state["optimizer"]["state"]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, p in enumerate(params):
            for key, shared in optimizer.state[p].items():
                if saved[index][key].shape != shared.shape:  # copy_ would broadcast
                    raise ValueError(f"optimizer {key} {index} has the wrong shape")
        optimizer.load_shared_state(state["optimizer"])
    except Exception as error:  # any key, index, type or shape that does not fit
        raise CheckpointError(
            f"{path} does not fit the network and optimizer ({_first_line(error)}):"
            " use another run folder"
        ) from None
    return progress_from(state["progress"], path)


def load_weights(path) -> tuple[dict, A3CConfig | None]:
    """A state dict from model.pt, checkpoint.pt, a run folder or a baby-a3c .tar.

    Returns (state_dict, config or None); the config comes from the checkpoint or
    from a config.json beside the file, when there is one."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL if (path / MODEL).exists() else path / CHECKPOINT
    data = _torch_load(path)
    config = None
    if isinstance(data, dict) and "model" in data and "config" in data:
        data, config = data["model"], config_from(data["config"], path)
    elif (path.parent / CONFIG).is_file():
        config = read_config_json(path.parent / CONFIG)
    _check_weights(data, path)
    return data, config


def load_agent_and_config(env_id: str, checkpoint=None, force: bool = False):
    """The network for `env_id` from `checkpoint` (default: pretrained/<game>/), and
    the config it was trained with: (ActorCritic, A3CConfig). A checkpoint that
    records another game is refused unless `force` (its actions must still fit).
    baby-a3c's `.tar` files hold no config; theirs is `SEED_PRESET`, the seed's
    own setup."""
    check_env_id(env_id)
    path = Path(checkpoint) if checkpoint else PRETRAINED / game_dir(env_id)
    if checkpoint is None and not path.exists():
        raise CheckpointError(
            f"no pretrained agent for {env_id}: pass --checkpoint PATH"
        )
    weights, config = load_weights(path)
    if config is not None and config.env_id != env_id and not force:
        raise CheckpointError(
            f"{path} is an agent for {config.env_id}, not {env_id}: pass --env "
            f"{config.env_id}, another --checkpoint, or --force to play it anyway"
        )
    config = config or dataclasses.replace(SEED_PRESET, env_id=env_id)
    return network_for(env_id, weights, path), config


def network_for(env_id: str, weights: dict, path) -> ActorCritic:
    """An ActorCritic for `env_id` holding `weights` (loaded strictly), ready to play;
    the error names `path` and what is wrong when they are for another game or
    network."""
    actions = num_actions(env_id)
    found = weights.get("actor_linear.weight")  # (A, H)
    have = found.shape[0] if found is not None and found.dim() == 2 else None
    if have != actions:
        what = "no policy head" if have is None else f"{have} actions"
        raise CheckpointError(
            f"{path} has {what}, but {env_id} has {actions}: wrong game"
        )
    try:
        hidden = (
            weights["gru.weight_hh"].shape[1] if "gru.weight_hh" in weights else 256
        )
        model = ActorCritic(actions, hidden)
        model.load_state_dict(weights, strict=True)
    except Exception as error:  # missing, extra or misshapen tensors
        raise CheckpointError(
            f"{path} does not fit the network: {_first_line(error)}"
        ) from None
    return model.to(memory_format=torch.channels_last).eval()  # faster convolutions


def load_agent(env_id: str, checkpoint=None) -> ActorCritic:
    """The network of `load_agent_and_config`, without its config.

    Book: chapter 6.
    """
    return load_agent_and_config(env_id, checkpoint)[0]
