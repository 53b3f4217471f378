"""Checkpoints that are never half-written, and clear loading errors (chapter 5).

A training checkpoint (`checkpoint.pt`) holds the model, the shared optimizer's state,
the counters, the config and the number of log rows it covers; `model.pt` beside it
holds the weights alone (the run folder's files are described in `a3c_core.runs`).
Both are written to a temporary file and renamed into place, so a run killed at any
moment leaves the previous complete file. Everything is loaded with
`torch.load(..., weights_only=True)`.

`load_agent` turns any checkpoint into a network ready to play (chapter 6): ours, a
run folder, or one of baby-a3c's original `model.*.tar` files (a bare state dict),
checked against the game it is asked to play.
"""

import dataclasses
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .config import SEED_PRESET, A3CConfig
from .envs import check_env_id, num_actions
from .network import ActorCritic
from .runs import CHECKPOINT, CONFIG, MODEL, PRETRAINED, game_dir


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or for another game; says what to do."""


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename over `path`.

    Book: chapter 5.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir, model, optimizer, cfg: A3CConfig, progress: dict) -> None:
    """Write checkpoint.pt, model.pt and config.json into `run_dir`, each atomically.

    Book: chapter 5.
    """
    run_dir = Path(run_dir)
    weights = {
        k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
    }
    state = {
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "config": json.loads(cfg.to_json()),
        "progress": dict(progress),
    }
    atomic_save(state, run_dir / CHECKPOINT)
    atomic_save(weights, run_dir / MODEL)
    tmp = run_dir / (CONFIG + ".tmp")
    tmp.write_text(cfg.to_json())
    os.replace(tmp, run_dir / CONFIG)


def _load_error_reason(error: Exception) -> str:
    """The informative line of a torch.load error, at most 120 characters."""
    text = str(error).strip()
    # weights_only errors open with a paragraph about torch 2.6; the reason follows
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:120]


def _torch_load(path: Path):
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(
            f"cannot read {path} ({_load_error_reason(e)}): the file is corrupt or "
            "not a torch checkpoint; use another checkpoint"
        ) from None


def load_training_checkpoint(run_dir) -> dict:
    """The full training state saved in `run_dir` (for --resume)."""
    path = Path(run_dir) / CHECKPOINT
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"no run folder {run_dir}: check the --resume path")
    state = _torch_load(path)
    if not isinstance(state, dict) or not {
        "model",
        "optimizer",
        "config",
        "progress",
    } <= set(state):
        raise CheckpointError(f"{path} is not an a3c_core training checkpoint")
    return state


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
        data, config = data["model"], A3CConfig.from_dict(data["config"])
    elif (path.parent / CONFIG).is_file():
        config = A3CConfig.from_dict(json.loads((path.parent / CONFIG).read_text()))
    if not isinstance(data, dict) or not all(
        isinstance(v, torch.Tensor) for v in data.values()
    ):
        raise CheckpointError(f"{path} holds no model weights")
    return data, config


def load_agent_and_config(env_id: str, checkpoint=None):
    """The network for `env_id` from `checkpoint` (default: pretrained/<game>/), and
    the config it was trained with: (ActorCritic, A3CConfig). baby-a3c's `.tar` files
    hold no config; theirs is `SEED_PRESET`, the seed's own setup."""
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
    config = config or dataclasses.replace(SEED_PRESET, env_id=env_id)
    return network_for(env_id, weights, path), config


def network_for(env_id: str, weights: dict, path) -> ActorCritic:
    """An ActorCritic for `env_id` holding `weights` (loaded strictly), ready to play;
    the error names `path` and what is wrong when they are for another game or
    network."""
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


def load_agent(env_id: str, checkpoint=None) -> ActorCritic:
    """The network of `load_agent_and_config`, without its config.

    Book: chapter 6.
    """
    return load_agent_and_config(env_id, checkpoint)[0]
