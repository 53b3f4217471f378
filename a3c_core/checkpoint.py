"""Checkpoints that are never half-written, and clear loading errors (chapter 5).

A training checkpoint (`checkpoint.pt`) holds the model, the shared optimizer's state,
the counters, the config and the number of log rows it covers; `model.pt` beside it
holds the weights alone. Both are written to a temporary file and renamed into
place, so a run killed at any moment leaves the previous complete file. Everything
is loaded with `torch.load(..., weights_only=True)`. Loading also understands
baby-a3c's original `model.*.tar` files (a bare state dict).

`config.json` is the run's latest config. When a resume changes a hyperparameter
(`train --resume DIR --lr ...`), `config_changes.jsonl` records which, from what to
what, and at which agent step, so the run's whole history stays known.
"""

import dataclasses
import datetime
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .config import A3CConfig

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"
LOG = "log.csv"
CHANGES = "config_changes.jsonl"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or for another game; says what to do.

    Book: chapter 5.
    """


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


def read_config_changes(run_dir) -> list[dict]:
    """config_changes.jsonl of a run folder, oldest first (empty if none): one
    {"agent_steps": S, "changed": {field: [old, new]}, "date": ...} per resume.

    Book: chapter 5.
    """
    path = Path(run_dir) / CHANGES
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def record_config_changes(run_dir, saved: A3CConfig, cfg: A3CConfig, agent_steps: int):
    """Append to config_changes.jsonl the fields a resume changes ([old, new] each)
    and the agent step it resumes at; returns those fields (empty if none changed).

    Book: chapter 5.
    """
    old, new = dataclasses.asdict(saved), dataclasses.asdict(cfg)
    changed = {k: [old[k], v] for k, v in new.items() if old[k] != v}
    last = (read_config_changes(run_dir) or [{}])[-1]
    # a resume that died before its first checkpoint resumes the same state again
    repeated = (last.get("agent_steps"), last.get("changed")) == (agent_steps, changed)
    if changed and not repeated:
        date = datetime.date.today().isoformat()
        record = {"agent_steps": agent_steps, "changed": changed, "date": date}
        with open(Path(run_dir) / CHANGES, "a") as f:
            f.write(json.dumps(record) + "\n")
    return changed


def load_training_checkpoint(run_dir) -> dict:
    """The full training state saved in `run_dir` (for --resume).

    Book: chapter 5.
    """
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
    from a config.json beside the file, when there is one.

    Book: chapter 5.
    """
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
