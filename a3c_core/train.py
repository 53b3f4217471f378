"""The trainer: start workers, watch them, log, checkpoint, resume (chapter 5).

`train` runs in the main process. It builds the shared model and optimizer, starts
`num_workers` worker processes with the `spawn` context and then only coordinates:
it reads the workers' episode and update reports, writes a log line every
`log_every` seconds and a checkpoint every `checkpoint_every` seconds, and stops the
run cleanly on Ctrl-C / SIGTERM, when a worker fails, or at `total_steps`.
"""

import csv
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import (
    CHECKPOINT,
    LOG,
    CheckpointError,
    load_training_checkpoint,
    record_config_changes,
    save_checkpoint,
)
from .config import A3CConfig
from .envs import num_actions
from .network import ActorCritic
from .optim import SharedAdam
from .worker import SharedCounters, worker_main

# glibc hands big freed blocks back to the OS and every fresh page faults, which is
# unusually costly on this kind of VM; keeping the memory makes workers faster.
MALLOC_TUNING = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
LOSS_PARTS = ("loss", "policy_loss", "value_loss", "entropy")
LOG_COLUMNS = (
    ["elapsed_s", "agent_steps", "episodes", "updates", "mean_return"]
    + list(LOSS_PARTS)
    + ["steps_per_s"]
)


class TrainingError(RuntimeError):
    """The run stopped abnormally (a worker died, the loss became NaN, ...).

    Book: chapter 5.
    """


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

    def record_episode(self, episode_return: float, horizon: float) -> None:
        """The seed's running mean: the first episode sets it, then an EMA."""
        self.episodes += 1
        if self.mean_return is None:
            self.mean_return = episode_return
        else:
            self.mean_return = (
                horizon * self.mean_return + (1 - horizon) * episode_return
            )


def open_log(run_dir: Path, keep_rows: int):
    """log.csv opened for appending, cut back to the rows the checkpoint covers.

    Book: chapter 5.
    """
    path = run_dir / LOG
    rows = []
    if keep_rows and path.exists():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1 : keep_rows + 1]
    with open(path, "w", newline="") as f:  # header + the kept rows
        csv.writer(f).writerows([LOG_COLUMNS, *rows])
    return open(path, "a", newline="")


def log_row(p: Progress, losses: list, samples_per_update: int, rate: float) -> list:
    """One log.csv row; losses are means per agent step over the recent updates.

    Book: chapter 5.
    """
    per_step = [
        sum(column) / (samples_per_update * len(losses)) for column in zip(*losses)
    ]
    mean_return = "" if p.mean_return is None else f"{p.mean_return:.3f}"
    return [
        f"{p.elapsed_s:.1f}",
        p.agent_steps,
        p.episodes,
        p.updates,
        mean_return,
        *([f"{x:.5f}" for x in per_step] if losses else [""] * len(LOSS_PARTS)),
        f"{rate:.1f}",
    ]


def format_line(row: list) -> str:
    """The console version of a log row.

    Book: chapter 5.
    """
    r = dict(zip(LOG_COLUMNS, row))
    hours, rest = divmod(int(float(r["elapsed_s"])), 3600)
    return (
        f"time {hours:02d}h{rest // 60:02d}m{rest % 60:02d}s  "
        f"steps {int(r['agent_steps']) / 1e6:.2f}M  episodes {r['episodes']}  "
        f"mean return {r['mean_return'] or 'n/a'}  loss/step {r['loss'] or 'n/a'}  "
        f"{float(r['steps_per_s']):.0f} steps/s"
    )


class Trainer:
    """Owns the shared model, optimizer, counters and worker processes of one run.

    Book: chapter 5.
    """

    def __init__(self, cfg: A3CConfig, run_dir, state: dict | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        torch.manual_seed(cfg.seed)
        model = ActorCritic(num_actions(cfg.env_id), cfg.hidden_size)
        self.model = model.to(memory_format=torch.channels_last).share_memory()
        self.optimizer = SharedAdam(self.model.parameters(), lr=cfg.lr)
        self.progress = Progress()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_shared_state(state["optimizer"])
            known = {f.name for f in dataclasses.fields(Progress)}
            saved = {k: v for k, v in state["progress"].items() if k in known}
            self.progress = Progress(**saved)
        self.ctx = mp.get_context("spawn")
        self.counters = SharedCounters(
            self.ctx, self.progress.agent_steps, self.progress.updates
        )
        self.events, self.stop = self.ctx.Queue(), self.ctx.Event()
        self.losses: list[tuple] = []  # updates since the last log row
        self.failure: str | None = None
        self.workers: list = []

    def start_workers(self) -> None:
        """Spawn the workers; they inherit the malloc tuning through the environment."""
        os.environ.update(
            {k: v for k, v in MALLOC_TUNING.items() if k not in os.environ}
        )
        args = (
            self.cfg,
            self.model,
            self.optimizer,
            self.counters,
            self.events,
            self.stop,
        )
        self.workers = [
            self.ctx.Process(target=worker_main, args=(rank, *args), daemon=True)
            for rank in range(self.cfg.num_workers)
        ]
        for w in self.workers:
            w.start()

    def drain_events(self, timeout: float) -> None:
        """Apply every report the workers sent; waits up to `timeout` for the first."""
        try:
            event = self.events.get(timeout=timeout)
            while True:
                self.handle(event)
                event = self.events.get_nowait()
        except queue.Empty:
            pass

    def handle(self, event: tuple) -> None:
        kind, *data = event
        if kind == "episode":
            self.progress.record_episode(data[0], self.cfg.return_horizon)
        elif kind == "update":
            self.losses.append(tuple(data))
        elif kind == "nan":
            self.fail(f"worker {data[0]} stopped the run: {data[1]}")
        elif kind == "error":
            tqdm.write(data[1])  # the worker's traceback
            self.fail(f"worker {data[0]} failed: {data[1].strip().splitlines()[-1]}")

    def fail(self, message: str) -> None:
        """Remember the first failure and stop every worker."""
        self.failure = self.failure or message
        self.stop.set()

    def check_workers(self) -> None:
        for rank, w in enumerate(self.workers):
            if w.exitcode not in (None, 0):
                self.fail(f"worker {rank} died with exit code {w.exitcode}")

    def write_log(self, log, rate: float) -> None:
        p, cfg = self.progress, self.cfg
        p.agent_steps, p.updates = (
            self.counters.steps.value,
            self.counters.updates.value,
        )
        row = log_row(p, self.losses, cfg.rollout_len * cfg.envs_per_worker, rate)
        csv.writer(log).writerow(row)
        log.flush()
        p.log_rows += 1
        self.losses = []
        tqdm.write(format_line(row))

    def save(self) -> None:
        """Checkpoint, unless the weights diverged (keep the last good one then)."""
        if not all(torch.isfinite(w).all() for w in self.model.parameters()):
            return self.fail("the shared weights are NaN or inf")
        p = self.progress
        p.agent_steps, p.updates = (
            self.counters.steps.value,
            self.counters.updates.value,
        )
        progress = dataclasses.asdict(p)
        save_checkpoint(self.run_dir, self.model, self.optimizer, self.cfg, progress)

    def join_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                w.terminate()
                w.join()

    def run(self, log, show_progress: bool) -> Progress:
        """Coordinate until every worker has stopped; log and checkpoint on the way."""
        cfg, p = self.cfg, self.progress
        start, elapsed0 = time.monotonic(), p.elapsed_s
        last_log = last_save = start
        logged_steps = self.counters.steps.value
        bar = tqdm(
            total=cfg.total_steps,
            initial=logged_steps,
            unit="step",
            disable=not show_progress,
        )
        self.start_workers()
        while any(w.is_alive() for w in self.workers):
            self.drain_events(timeout=0.5)
            self.check_workers()
            now, steps = time.monotonic(), self.counters.steps.value
            p.elapsed_s = elapsed0 + now - start
            bar.update(steps - bar.n)
            if cfg.train_minutes and p.elapsed_s >= 60 * cfg.train_minutes:
                self.stop.set()  # the time budget is spent; workers finish an update
            if now - last_log >= cfg.log_every:
                self.write_log(log, (steps - logged_steps) / (now - last_log))
                last_log, logged_steps = now, steps
            if now - last_save >= cfg.checkpoint_every and not self.failure:
                self.save()
                last_save = now
        bar.close()
        self.drain_events(timeout=0.1)
        self.check_workers()
        if not self.failure:
            now = time.monotonic()
            p.elapsed_s = elapsed0 + now - start
            steps = self.counters.steps.value
            if (
                steps > logged_steps
            ):  # no empty row when nothing happened since the last
                self.write_log(log, (steps - logged_steps) / (now - last_log))
            self.save()
        if self.failure:
            raise TrainingError(f"{self.failure}; the last good checkpoint is kept")
        return p


def prepare_run(cfg: A3CConfig, run_dir, resume: bool) -> dict | None:
    """Check the run folder; returns the saved state when resuming.

    Book: chapter 5.
    """
    run_dir = Path(run_dir)
    if not resume:
        if (run_dir / CHECKPOINT).exists():
            raise CheckpointError(
                f"{run_dir} already holds a run: pass --resume {run_dir} to "
                "continue it, or choose another --run-dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    state = load_training_checkpoint(run_dir)
    saved = A3CConfig.from_dict(state["config"])
    if (saved.env_id, saved.hidden_size) != (cfg.env_id, cfg.hidden_size):
        raise CheckpointError(
            f"{run_dir} trains {saved.env_id} (hidden {saved.hidden_size}); "
            f"cannot resume it as {cfg.env_id} (hidden {cfg.hidden_size})"
        )
    steps = state["progress"]["agent_steps"]
    for name, (old, new) in record_config_changes(run_dir, saved, cfg, steps).items():
        tqdm.write(f"{name}: {old} -> {new} from agent step {steps}")
    return state


def train(cfg: A3CConfig, run_dir, resume: bool = False, show_progress: bool = True):
    """Train until `cfg.total_steps` agent steps or a stop; returns the `Progress`.

    Ctrl-C and SIGTERM stop the workers after their current update and write a
    final checkpoint; `resume=True` continues from the checkpoint in `run_dir`.

    Book: chapter 5.
    """
    trainer = Trainer(cfg, run_dir, prepare_run(cfg, run_dir, resume))

    def request_stop(signum, _frame):
        tqdm.write(f"{signal.Signals(signum).name}: stopping after the current updates")
        trainer.stop.set()

    handlers = {
        s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)
    }
    log = open_log(Path(run_dir), trainer.progress.log_rows)
    try:
        return trainer.run(log, show_progress)
    finally:
        trainer.stop.set()
        trainer.join_workers(timeout=10.0)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        log.close()
