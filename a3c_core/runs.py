"""The run folder: what a training run writes, and how to read it back (chapter 5).

A run lives in one folder (`runs/pong-v4/`, or `pretrained/pong-v4/` for our agents):

- `checkpoint.pt`: weights, shared optimizer state, config and `Progress`, to resume;
- `model.pt`: the weights alone, to play;
- `config.json`: the run's latest config;
- `log.csv`: one row every `log_every` seconds, the whole history across resumes;
- `config_changes.jsonl`: every hyperparameter a resume changed, and from which
  agent step;
- `train.lock` and `train.fence`, while a trainer works in the folder: its pid, and
  the lock that makes its checkpoints consistent (`a3c_core.worker.UpdateFence`);
  a killed trainer leaves them behind, harmless, and the next one reuses them.

This module names those files and owns the log and the change records: it writes
them (`open_log`, `log_row`, `record_config_changes`) and reads them back
(`read_log`, `training_info`, `read_config_changes`, `config_at`, `changed_at`).
It also keeps a run folder safe: one trainer at a time (`lock_run_dir`), files
replaced whole or not at all (`write_atomically`), and file-system errors (a full
disk, a read-only folder) as one line naming the path (`FileAccessError`).
Checkpoints themselves are written and loaded by `a3c_core.checkpoint`.
"""

import contextlib
import csv
import dataclasses
import datetime
import fcntl
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import RUN_CONTROL, A3CConfig
from .optim import plausible_plateau

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"
LOG = "log.csv"
CHANGES = "config_changes.jsonl"
LOCK = "train.lock"
FENCE = "train.fence"

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
"""Our trained agents, one run folder per game (`pretrained/pong-v4/`)."""

LOSS_PARTS = ("loss", "policy_loss", "value_loss", "entropy")
LOG_COLUMNS = (
    ["elapsed_s", "agent_steps", "episodes", "updates", "mean_return"]
    + list(LOSS_PARTS)
    + ["steps_per_s", "lr"]
)
COUNT_COLUMNS = ("agent_steps", "episodes", "updates")  # integers; the rest are floats


def game_dir(env_id: str) -> str:
    """pong-v4 for Pong-v4; ale-pong-v5 for ALE/Pong-v5: a run folder's usual name."""
    return env_id.lower().replace("/", "-")


@dataclass
class Progress:
    """What a checkpoint remembers besides weights: counters and the log position.

    Book: chapter 5.
    """

    agent_steps: int = 0
    episodes: int = 0
    updates: int = 0
    elapsed_s: float = 0.0
    mean_return: float | None = None  # running mean of raw episode returns
    log_rows: int = 0  # rows of log.csv that belong to this checkpoint
    lr_cuts: int = 0  # learning-rate cuts made on plateaus (A3CConfig.lr_plateau_cuts)
    plateau: dict = field(default_factory=dict)  # the plateau test's Plateau.state()

    def record_episode(self, episode_return: float, horizon: float) -> None:
        """The seed's running mean: the first episode sets it, then an EMA."""
        self.episodes += 1
        if self.mean_return is None:
            self.mean_return = episode_return
        else:
            self.mean_return = (
                horizon * self.mean_return + (1 - horizon) * episode_return
            )

    @classmethod
    def from_dict(cls, saved: dict) -> "Progress":
        """The `Progress` saved in a checkpoint (keys it does not know are skipped);
        ValueError names a value that no run could have saved."""
        known = {f.name for f in dataclasses.fields(cls)}
        progress = cls(**{k: v for k, v in saved.items() if k in known})
        for name, value in dataclasses.asdict(progress).items():
            if not cls.plausible(name, value):
                raise ValueError(f"progress {name} is {value!r}")
        return progress

    @staticmethod
    def plausible(name: str, value) -> bool:
        """Could a run have saved this value of field `name`?"""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        finite = number and math.isfinite(value)
        if name == "mean_return":
            return value is None or finite  # None until the first episode ends
        if name == "elapsed_s":
            return finite and value >= 0
        if name == "plateau":
            return value == {} or plausible_plateau(value)
        return number and isinstance(value, int) and value >= 0  # a counter


def open_log(run_dir: Path, keep_rows: int):
    """log.csv opened for appending, cut back to the rows the checkpoint covers.

    The cut log is written beside the old one and renamed over it, never rewritten
    in place: a kill or a full disk at that moment leaves the old log whole.

    Book: chapter 5.
    """
    path = Path(run_dir) / LOG
    rows = []
    if keep_rows and path.exists():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1 : keep_rows + 1]
    text = io.StringIO(newline="")
    csv.writer(text).writerows([LOG_COLUMNS, *rows])  # header + the kept rows
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))
    try:
        return open(path, "a", newline="")
    except OSError as error:
        raise FileAccessError(cannot_write(path, error)) from None


def log_row(
    p: Progress, updates: list, samples_per_update: int, rate: float, lr: float
) -> list:
    """One log.csv row; `updates` are the workers' reports since the last row (each
    has the `LOSS_PARTS` as attributes), logged as means per agent step; `lr` is the
    learning rate the workers use now.

    Book: chapter 5.
    """
    samples = samples_per_update * len(updates)
    losses = [
        f"{sum(getattr(u, part) for u in updates) / samples:.5f}" if updates else ""
        for part in LOSS_PARTS
    ]
    mean_return = "" if p.mean_return is None else f"{p.mean_return:.3f}"
    return [
        f"{p.elapsed_s:.1f}",
        p.agent_steps,
        p.episodes,
        p.updates,
        mean_return,
        *losses,
        f"{rate:.1f}",
        f"{lr:.4g}",
    ]


def format_line(row: list) -> str:
    """The console version of a log row."""
    r = dict(zip(LOG_COLUMNS, row))
    hours, rest = divmod(int(float(r["elapsed_s"])), 3600)
    return (
        f"time {hours:02d}h{rest // 60:02d}m{rest % 60:02d}s  "
        f"steps {int(r['agent_steps']) / 1e6:.2f}M  episodes {r['episodes']}  "
        f"mean return {r['mean_return'] or 'n/a'}  loss/step {r['loss'] or 'n/a'}  "
        f"{float(r['steps_per_s']):.0f} steps/s"
    )


def read_log(path) -> list[dict]:
    """The rows of a run's log.csv, oldest first, as {column: value} dicts.

    `path` is a run folder or a file in log.csv's format. Counts (`agent_steps`,
    `episodes`, `updates`) are ints, the other columns floats, and an empty cell
    (no episode finished yet, no update since the last row) is None, and so is a
    column that an older log did not have yet (`lr`).

    Book: chapter 5.
    """
    path = Path(path)
    path = path / LOG if path.is_dir() else path
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = {
        column: int if column in COUNT_COLUMNS else float for column in LOG_COLUMNS
    }
    return [
        {k: None if v in ("", None) else kinds.get(k, float)(v) for k, v in row.items()}
        for row in ({**dict.fromkeys(LOG_COLUMNS), **r} for r in rows)
    ]


def training_info(run_dir) -> dict:
    """Agent steps and wall-clock hours of training from the log.csv in `run_dir`
    (empty for a folder without one, such as baby-a3c's checkpoints)."""
    path = Path(run_dir) / LOG
    rows = read_log(path) if path.is_file() else []
    if not rows:
        return {}
    last = rows[-1]
    return {
        "agent_steps": last["agent_steps"],
        "hours": round(last["elapsed_s"] / 3600, 2),
    }


def read_config_changes(run_dir) -> list[dict]:
    """config_changes.jsonl of a run folder, oldest first (empty if none): one
    {"agent_steps": S, "changed": {field: [old, new]}, "date": ...} per resume."""
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
        path = Path(run_dir) / CHANGES
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:
            raise FileAccessError(cannot_write(path, error)) from None
    return changed


def config_at(run_dir, steps: int) -> A3CConfig:
    """The config a run trained with at agent step `steps`: its config.json with
    the changes recorded after `steps` undone, newest first (a change recorded at
    agent step S applies from S on)."""
    config = json.loads((Path(run_dir) / CONFIG).read_text())
    for change in reversed(read_config_changes(run_dir)):
        if change["agent_steps"] > steps:
            config.update({k: old for k, (old, _) in change["changed"].items()})
    return A3CConfig.from_dict(config)


def changed_at(run_dir, steps: int) -> dict:
    """The fields that change what the run learns (all but `RUN_CONTROL`) changed by
    a resume at agent step `steps`, as {field: [old, new]}; empty if none."""
    changed = {}
    for change in read_config_changes(run_dir):
        if change["agent_steps"] == steps:
            for k, (old, new) in change["changed"].items():
                if k not in RUN_CONTROL:
                    changed[k] = [changed.get(k, [old])[0], new]
    return changed


class FileAccessError(OSError):
    """A file or folder that cannot be written or used: a full disk, a read-only
    folder, no permission, or a run folder another trainer is using. The message
    is one line that names the path and says what to do."""


def cannot_write(path, error: OSError) -> str:
    """The one-line message for an OSError met while writing `path`."""
    reason = error.strerror or str(error) or type(error).__name__
    return (
        f"cannot write {path} ({reason}): free some space, or choose a place "
        "you can write to"
    )


def write_atomically(path, write) -> None:
    """Write a file with `write(f)` (f: a binary file) to path.tmp, fsync it, then
    rename it over `path`, so readers see the old file or the new one, never half
    of one. On any failure the .tmp is removed and the old file kept; file-system
    errors become a `FileAccessError` naming `path`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, FileAccessError):
            raise FileAccessError(cannot_write(path, error)) from None
        raise


def check_writable(path) -> None:
    """Raise `FileAccessError` unless a file can be written at `path`: a probe
    file beside it is written and removed. For outputs written after minutes of
    work (`evaluate --out`, `play --gif`), so a typo fails at once."""
    path = Path(path)
    if path.is_dir():
        raise FileAccessError(f"cannot write {path}: it is a folder; give a file name")
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.write(fd, b"probe")  # a full disk may allow a new empty file
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise FileAccessError(cannot_write(path, error)) from None


@contextlib.contextmanager
def lock_run_dir(run_dir, create: bool = True):
    """Hold an exclusive lock on `run_dir` (created if `create`) while a trainer
    works in it; a second trainer gets a `FileAccessError` naming the first one's
    pid. The lock is a `flock` on run_dir/train.lock, which the OS releases when
    its holder dies: a killed run never leaves a stale lock.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    try:
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        lock = _locked_file(path)
    except FileNotFoundError:
        raise FileAccessError(f"no run folder {run_dir}: check the path") from None
    except FileAccessError:
        raise  # already one line naming the holder: not a write problem to rephrase
    except OSError as error:
        raise FileAccessError(cannot_write(path, error)) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: see _locked_file
        lock.close()


def _locked_file(path: Path):
    """train.lock, opened and locked, holding our pid."""
    while True:
        lock = open(path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise FileAccessError(
                f"{path.parent} is in use by another trainer (pid {holder}): stop "
                "it first, or choose another run folder"
            ) from None
        # the holder we waited for may have removed the file as it ended: then we
        # locked a file no one else will open; try again on the one at `path`
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                lock.truncate(0)
                lock.write(f"{os.getpid()}\n")
                lock.flush()
                return lock
        lock.close()
