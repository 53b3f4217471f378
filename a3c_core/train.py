"""The trainer: start workers, watch them, log, checkpoint, resume (chapter 5).

`train` runs in the main process. It builds the shared model and optimizer, starts
`num_workers` worker processes with the `spawn` context and then only coordinates:
it applies the workers' reports (`EpisodeEnd`, `UpdateDone`, `WorkerFailed`), writes
a log row every `log_every` seconds and a checkpoint every `checkpoint_every` seconds
(and both once more at the end), and stops the run cleanly on Ctrl-C / SIGTERM (sent
to it or to its whole process group), when a worker fails, at `total_steps` or when
`train_minutes` are spent. One trainer at a time works in a run folder; what it
writes there is described in `a3c_core.runs`.
"""

import contextlib
import csv
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import (
    CheckpointError,
    load_training_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from .config import A3CConfig
from .envs import num_actions
from .network import ActorCritic
from .optim import Plateau, SharedAdam, scheduled_bonus, scheduled_lr
from .runs import (
    CHECKPOINT,
    FENCE,
    LOG,
    MODEL,
    FileAccessError,
    Progress,
    cannot_write,
    format_line,
    lock_run_dir,
    log_row,
    open_log,
    record_config_changes,
)
from .worker import (
    STOP_SIGNALS,
    EpisodeEnd,
    SharedCounters,
    UpdateDone,
    UpdateFence,
    WorkerFailed,
    worker_main,
)

# glibc hands big freed blocks back to the OS and every fresh page faults, which is
# unusually costly on this kind of VM; keeping the memory makes workers faster.
MALLOC_TUNING = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


FAILED_WAIT_S = 15.0  # after a failure, how long the workers get to stop by themselves


class TrainingError(RuntimeError):
    """The run stopped abnormally (a worker died, the loss became NaN, ...)."""


def shared_model(cfg: A3CConfig) -> tuple[ActorCritic, SharedAdam]:
    """A run's fresh model (seeded by cfg.seed) in shared memory, and the Adam that
    every worker steps. channels_last, the workers' own layout: pulling the weights
    is then a plain copy.

    Book: chapter 5.
    """
    torch.manual_seed(cfg.seed)
    model = ActorCritic(num_actions(cfg.env_id), cfg.hidden_size)
    model = model.to(memory_format=torch.channels_last).share_memory()
    return model, SharedAdam(model.parameters(), lr=cfg.lr)


class Trainer:
    """Owns the shared model, optimizer, counters and worker processes of one run.

    Book: chapter 5.
    """

    def __init__(self, cfg: A3CConfig, run_dir, state: dict | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.model, self.optimizer = shared_model(cfg)
        self.progress = Progress()
        if state is not None:
            self.progress = restore_training_state(
                state, self.model, self.optimizer, self.run_dir / CHECKPOINT
            )
        p, self.ctx = self.progress, mp.get_context("spawn")
        self.counters = SharedCounters(self.ctx, p.agent_steps, p.updates, p.lr_cuts)
        self.plateau = Plateau(
            cfg.lr_plateau_window, cfg.lr_plateau_patience, **p.plateau
        )
        self.events, self.stop = self.ctx.Queue(), self.ctx.Event()
        self.fence: UpdateFence | None = None  # made with the workers
        self.updates: list[UpdateDone] = []  # reports since the last log row
        self.failure: str | None = None
        self.workers: list = []
        self.elapsed_before, self.logged_steps = p.elapsed_s, p.agent_steps
        self.started = self.logged_at = self.saved_at = 0.0  # clock times, from run

    def start_workers(self) -> None:
        """Spawn the workers with the stop signals blocked, so that they are born
        deaf to a Ctrl-C or SIGTERM sent to the whole group (`worker_main` then
        ignores them); they inherit the malloc tuning through the environment."""
        for name, value in MALLOC_TUNING.items():
            os.environ.setdefault(name, value)  # unless the user set it
        self.fence = UpdateFence(self.run_dir / FENCE)  # the run folder is ours
        shared = (self.model, self.optimizer, self.counters, self.events, self.stop)
        self.workers = [
            self.ctx.Process(
                target=worker_main,
                args=(rank, self.cfg, *shared, self.fence),
                daemon=True,
            )
            for rank in range(self.cfg.num_workers)
        ]
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for w in self.workers:
                w.start()  # the child inherits the blocked signals
        finally:  # a signal that came meanwhile is delivered to us now
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)

    def drain_events(self, timeout: float) -> None:
        """Apply every report the workers sent; waits up to `timeout` for the first."""
        try:
            event = self.events.get(timeout=timeout)
            while True:
                self.handle(event)
                event = self.events.get_nowait()
        except queue.Empty:
            pass

    def handle(self, event) -> None:
        """Apply one worker report to the run's progress."""
        if isinstance(event, EpisodeEnd):
            self.record_episode(event.score, self.counters.steps.value)
        elif isinstance(event, UpdateDone):
            self.updates.append(event)
        elif isinstance(event, WorkerFailed):
            if event.traceback:
                tqdm.write(event.traceback)
            self.fail(f"worker {event.rank} {event.message}")

    def record_episode(self, score: float, agent_steps: int) -> None:
        """Count an episode that ended at `agent_steps`; cut the learning rate if the
        score has stalled and cuts are left (the workers read the count before each
        update). The checkpoint keeps the plateau test, so a resume goes on with it."""
        cfg, p = self.cfg, self.progress
        p.record_episode(score, cfg.return_horizon)
        if p.lr_cuts >= cfg.lr_plateau_cuts:
            return
        if self.plateau.stalled(score, agent_steps):
            p.lr_cuts = self.counters.lr_cuts.value = p.lr_cuts + 1
            lr = scheduled_lr(cfg, agent_steps, p.lr_cuts)
            bonus = scheduled_bonus(cfg, p.lr_cuts).entropy_coef
            tqdm.write(
                f"score stalled at {agent_steps} agent steps: lr now {lr:.3g}, "
                f"entropy bonus {bonus:.3g}"
            )
        p.plateau = self.plateau.state()

    def fail(self, message: str) -> None:
        """Remember the first failure and stop every worker."""
        if self.failure is None:
            self.failure, self.failed_at = message, time.monotonic()
        self.stop.set()

    def check_workers(self) -> None:
        for rank, w in enumerate(self.workers):
            if w.exitcode not in (None, 0):
                self.fail(f"worker {rank} died with exit code {w.exitcode}")

    def keep_up(self, log, final: bool = False) -> None:
        """Bring `progress` up to date, stop the run when its time budget is spent,
        and log and checkpoint when due; at the end (`final`), log if anything
        happened since the last row and checkpoint, unless something failed."""
        self.check_workers()
        cfg, p, now, counters = self.cfg, self.progress, time.monotonic(), self.counters
        p.elapsed_s = self.elapsed_before + now - self.started
        p.agent_steps, p.updates = counters.steps.value, counters.updates.value
        if cfg.train_minutes and p.elapsed_s >= 60 * cfg.train_minutes:
            self.stop.set()  # the time budget is spent; workers finish an update
        if final and self.failure:
            return
        if final:
            log_due, save_due = p.agent_steps > self.logged_steps, True
        else:
            log_due = now - self.logged_at >= cfg.log_every
            save_due = now - self.saved_at >= cfg.checkpoint_every
        if log_due:
            self.write_log(log, now)
        if save_due and not self.failure:
            self.save()
            self.saved_at = now

    def write_log(self, log, now: float) -> None:
        """Append a row to log.csv and print it; the rate is since the last row."""
        cfg, p = self.cfg, self.progress
        rate = (p.agent_steps - self.logged_steps) / (now - self.logged_at)
        lr = scheduled_lr(cfg, p.agent_steps, p.lr_cuts)
        row = log_row(p, self.updates, cfg.agent_steps_per_update, rate, lr)
        try:
            csv.writer(log).writerow(row)
            log.flush()
        except OSError as error:  # a full disk: stop, keeping the last checkpoint
            return self.fail(cannot_write(self.run_dir / LOG, error))
        p.log_rows += 1
        self.updates, self.logged_at, self.logged_steps = [], now, p.agent_steps
        tqdm.write(format_line(row))

    def save(self) -> None:
        """Checkpoint: copy the state holding the fence exclusively (no update is
        half done, so weights, Adam's step and the counters agree), then write it
        while the workers go on. If the weights diverged or the disk refuses the
        files, stop the run instead: the last good checkpoint stays."""
        p, counters = self.progress, self.counters
        with self.fence.held(exclusive=True):
            p.agent_steps, p.updates = counters.steps.value, counters.updates.value
            state = training_state(
                self.model, self.optimizer, self.cfg, dataclasses.asdict(p)
            )
        if not all(torch.isfinite(w).all() for w in state["model"].values()):
            return self.fail("the shared weights are NaN or inf")
        try:
            save_checkpoint(self.run_dir, state)
        except FileAccessError as error:
            self.fail(str(error))

    def shut_down(self, timeout: float) -> None:
        """Stop the workers after their current update (kill those still running
        after `timeout` seconds: they ignore SIGTERM) and remove the fence."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                w.kill()
                w.join()
        if self.fence is not None:
            self.fence.remove()

    def run(self, log, show_progress: bool) -> Progress:
        """Coordinate until every worker has stopped; log and checkpoint on the way."""
        p = self.progress
        bar = tqdm(
            total=self.cfg.total_steps,
            initial=p.agent_steps,
            unit="step",
            disable=not show_progress,
        )
        self.started = self.logged_at = self.saved_at = time.monotonic()
        self.start_workers()
        while any(w.is_alive() for w in self.workers):
            self.drain_events(timeout=0.5)
            self.keep_up(log)
            bar.update(p.agent_steps - bar.n)
            if self.failure and time.monotonic() - self.failed_at > FAILED_WAIT_S:
                break  # a worker stuck on a lock a killed peer held: shut_down kills it
        bar.close()
        self.drain_events(timeout=0.1)
        self.keep_up(log, final=True)
        if self.failure:
            raise TrainingError(f"{self.failure}; the last good checkpoint is kept")
        return p


def prepare_run(cfg: A3CConfig, run_dir, resume: bool) -> dict | None:
    """Check the (locked) run folder; returns the saved state when resuming. A new
    run refuses a folder that holds a model: it would overwrite it."""
    run_dir = Path(run_dir)
    if not resume:
        if (run_dir / CHECKPOINT).exists():
            raise CheckpointError(
                f"{run_dir} already holds a run: pass --resume {run_dir} to "
                "continue it, or choose another --run-dir"
            )
        if (run_dir / MODEL).exists():
            raise CheckpointError(
                f"{run_dir} holds a {MODEL} (and no {CHECKPOINT} to resume): "
                "choose another --run-dir, or move the model away"
            )
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


@contextlib.contextmanager
def stop_on_signals(stop):
    """Inside, SIGINT and SIGTERM set `stop` instead of killing this process: the
    workers finish their update and the trainer writes a final checkpoint."""

    def request_stop(signum, _frame):
        tqdm.write(f"{signal.Signals(signum).name}: stopping after the current updates")
        stop.set()

    handlers = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def train(
    cfg: A3CConfig,
    run_dir,
    resume: bool = False,
    show_progress: bool = True,
    trainer_class=Trainer,
):
    """Train until `cfg.total_steps` agent steps or a stop; returns the `Progress`.

    One trainer at a time per run folder (`lock_run_dir`). Ctrl-C and SIGTERM, to
    this process or to its whole group, stop the workers after their current
    update and write a final checkpoint; `resume=True` continues from the
    checkpoint in `run_dir`. `trainer_class` is a `Trainer` subclass's constructor
    (a3c_core.distributed's).

    Book: chapter 5.
    """
    run_dir = Path(run_dir)
    with lock_run_dir(run_dir, create=not resume):
        trainer = trainer_class(cfg, run_dir, prepare_run(cfg, run_dir, resume))
        log = open_log(run_dir, trainer.progress.log_rows)
        try:
            with stop_on_signals(trainer.stop):
                return trainer.run(log, show_progress)
        finally:
            trainer.shut_down(timeout=10.0)
            with contextlib.suppress(OSError):  # a failed write was reported
                log.close()
