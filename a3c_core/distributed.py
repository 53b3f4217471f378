"""One agent trained on several machines: torchrun, torch.distributed (gloo).

`torchrun --nnodes N --nproc-per-node 1 ... -m a3c_core train ...` starts one copy of
`python -m a3c_core train` per machine, a *rank*. Each rank runs chapter 5's trainer
unchanged: its Hogwild workers update its own shared model with its own shared Adam.
The trainer's main process, which otherwise only waits for the workers' reports,
keeps the ranks together (`DistributedTrainer.sync`, every `sync_every` seconds):

- the ranks exchange a `Report` (agent steps, updates, finished episodes, losses, and
  whether they stop or failed), so the step counter, `total_steps`, the log and the
  running mean of the returns are the whole run's, summed over the ranks;
- each rank's parameters become the mean over the ranks (`mean_over_ranks`), plus what
  its workers changed while the mean was on the wire (`merge_`). Adam's moments stay
  each rank's own.

Before training, the ranks agree: rank 0 reads the run to resume (`from_rank0`), each
rank resolves its config from its flags and a rank whose config differs is refused
(`agree_on_config`); then every rank starts from rank 0's weights, optimizer state and
counters. Rank 0 alone writes the run folder. A rank that dies makes the others'
next collective fail at once (gloo sees the closed connection; a rank that falls
silent, after `TIMEOUT`); they name it from the heartbeats each rank keeps in the
launch's rendezvous store (`Heartbeat`), stop, and keep the last good checkpoint.

Without torchrun's environment (`world_from_env` is None) nothing here runs and no
process group exists. The book explains this module after chapter 5, in the page
"Beyond one machine" (book/distributed.md).
"""

import dataclasses
import functools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import CheckpointError, load_training_checkpoint
from .config import MAX_SEED, A3CConfig, ConfigError
from .envs import UnknownEnvError
from .train import Trainer, TrainingError, train
from .worker import EpisodeEnd, UpdateDone

TIMEOUT = timedelta(seconds=60)
"""How long a collective waits for a rank that stays silent (a dead one is seen at
once). The ranks enter each sync together, so only a lost rank makes one wait."""

RANK_SEED_STRIDE = 1_000_000  # rank r trains with seed + r * stride: its own games
BEAT_EVERY = 0.5  # seconds between two heartbeats of a rank
# The CLI's usage errors (one line, exit code 2; a3c_core.cli.USAGE_ERRORS): an
# OSError is a run folder that is locked, unwritable or on a full disk.
USAGE_ERRORS = (ConfigError, UnknownEnvError, CheckpointError, OSError)


@dataclass
class World:
    """This process's place in a torchrun launch, from the environment torchrun sets.

    Book: Beyond one machine.
    """

    rank: int
    size: int
    master_addr: str  # the rendezvous store's host and port
    master_port: int
    restart: int = 0  # torchrun's restarts so far (--max-restarts)
    state_shared: bool = False  # rank 0's starting state has been broadcast
    heartbeat: "Heartbeat | None" = field(default=None, repr=False)


def world_from_env(environ=os.environ) -> World | None:
    """The torchrun launch this process is a rank of, or None for a plain run (no
    WORLD_SIZE in the environment: train exactly as on one machine). A half-set
    environment is a ConfigError, one line."""
    if "WORLD_SIZE" not in environ:
        return None
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not environ.get(k)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is set but not {', '.join(missing)}: start ranks with torchrun"
        )
    try:
        rank, size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        port = int(environ["MASTER_PORT"])
        restart = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError as error:
        raise ConfigError(f"torchrun's environment is not numbers: {error}") from None
    if not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} is not in 0..{size - 1} (WORLD_SIZE {size})")
    return World(rank, size, environ["MASTER_ADDR"], port, restart)


def rank_config(cfg: A3CConfig, rank: int) -> A3CConfig:
    """The config rank `rank` trains with: the run's, with a seed of its own, so that
    the ranks play different games and sample different actions.

    Book: Beyond one machine.
    """
    seed = (cfg.seed + RANK_SEED_STRIDE * rank) % (MAX_SEED + 1)
    return dataclasses.replace(cfg, seed=seed)


def store_client(world: World) -> dist.Store:
    """A connection of our own to the launch's rendezvous store (torchrun's agent
    hosts it, or rank 0 when the ranks were started by hand)."""
    store = dist.TCPStore(
        world.master_addr, world.master_port, is_master=False, timeout=TIMEOUT
    )
    return dist.PrefixStore(f"a3c/{world.restart}", store)


def beat_key(rank: int) -> str:
    return f"beat/{rank}"


class Heartbeat:
    """A thread that counts up this rank's key in the rendezvous store every
    `BEAT_EVERY` seconds. It beats while the main thread waits in gloo and stops with
    the process, so after a failed collective the survivors see who is gone.

    Book: Beyond one machine.
    """

    def __init__(self, world: World):
        self.store, self.key = store_client(world), beat_key(world.rank)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)
        self.thread.start()

    def beat(self) -> None:
        while not self.stopped.wait(BEAT_EVERY):
            try:
                self.store.add(self.key, 1)
            except RuntimeError:
                return  # the store's host is gone; the failure path will say so

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def silent_ranks(world: World, wait: float = 4 * BEAT_EVERY) -> list[int] | None:
    """The other ranks whose heartbeat stood still for `wait` seconds: dead, frozen or
    cut off. None if the rendezvous store cannot be read either.

    Book: Beyond one machine.
    """
    try:
        store = store_client(world)
        keys = [beat_key(rank) for rank in range(world.size)]
        before = [store.add(key, 0) for key in keys]  # add 0: read without blocking
        time.sleep(wait)
        after = [store.add(key, 0) for key in keys]
    except RuntimeError:
        return None
    return [r for r in range(world.size) if r != world.rank and before[r] == after[r]]


def lost_rank_message(world: World, error: Exception) -> str:
    """One line for a collective that failed: which rank is gone, and gloo's reason."""
    # gloo says "[path/pair.cc:553] Connection closed by peer [addr]:port. This is..."
    reason = str(error).strip().splitlines()[0].split("] ", 1)[-1].split(". ")[0]
    silent = silent_ranks(world)
    if silent is None:
        return (
            f"a rank stopped answering and the rendezvous store is unreachable too "
            f"({reason}): is the machine that hosts it down?"
        )
    if not silent:
        return f"a collective failed but every rank still beats ({reason}): network?"
    names = ", ".join(map(str, silent))
    rank = "rank" if len(silent) == 1 else "ranks"
    return f"{rank} {names} stopped answering (killed, crashed or cut off: {reason})"


def join(world: World) -> None:
    """Join the launch's gloo process group and start this rank's heartbeat; a rank
    that cannot reach the others within `TIMEOUT` stops with one line.

    Book: Beyond one machine.
    """
    try:
        dist.init_process_group(
            "gloo", rank=world.rank, world_size=world.size, timeout=TIMEOUT
        )
        world.heartbeat = Heartbeat(world)
    except RuntimeError as error:  # DistStoreError, DistNetworkError: no rendezvous
        reason = str(error).strip().splitlines()[0][:200]
        raise TrainingError(
            f"rank {world.rank} could not join the launch at "
            f"{world.master_addr}:{world.master_port}: {reason}"
        ) from None


def leave(world: World) -> None:
    if world.heartbeat is not None:
        world.heartbeat.stop()
    if dist.is_initialized():
        dist.destroy_process_group()


def flatten(tensors) -> torch.Tensor:
    """The tensors' values in one new flat float tensor (P,), in logical order."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def mean_over_ranks(flat: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `flat` (P,) over the ranks: one all_reduce. Every
    rank gets the same bits (gloo sums each element once and sends the sum around).

    Book: Beyond one machine.
    """
    total = flat.clone()
    dist.all_reduce(total)  # sum
    return total.div_(dist.get_world_size())  # (P,)


def merge_(tensors, snapshot: torch.Tensor, mean: torch.Tensor) -> None:
    """Set each tensor to the ranks' `mean` (P,) plus what changed in it since
    `snapshot` (P,) was taken: the workers went on updating while the mean was on the
    wire (Hogwild: nobody waits), and their updates are kept, not overwritten. Exactly
    `mean` where nothing changed.

    Book: Beyond one machine.
    """
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            then = snapshot[offset : offset + n].view(t.shape)
            t.copy_(mean[offset : offset + n].view(t.shape) + (t - then))
            offset += n


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Every rank's parameters become rank 0's (one broadcast)."""
    params = list(model.parameters())
    mine = flatten(params)  # (P,)
    received = mine.clone()
    dist.broadcast(received, src=0)
    merge_(params, mine, received)


def from_rank0(compute):
    """rank 0's `compute()`, on every rank (one broadcast); a usage error raised by
    `compute` on rank 0 is raised on every rank, as a one-line ConfigError.

    Book: Beyond one machine.
    """
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", compute())]
        except USAGE_ERRORS as error:
            box = [("error", f"rank 0: {error}")]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise ConfigError(value)
    return value


def disagreement(every: list[dict]) -> str:
    """Why the ranks cannot train together, in one line ('' if they can). `every[r]`
    is rank r's {"config": dict, "resume": bool} or {"error": message}.

    Book: Beyond one machine.
    """
    for rank, mine in enumerate(every):
        if "error" in mine:
            return f"rank {rank}: {mine['error']}"
    first = every[0]
    for rank, other in enumerate(every[1:], start=1):
        if other["resume"] != first["resume"]:
            how = {True: "with", False: "without"}
            return (
                f"rank {rank} was started {how[other['resume']]} --resume, rank 0 "
                f"{how[first['resume']]}: start every rank with the same command"
            )
        ours = first["config"]
        diff = [
            f"{k} {v!r} (rank 0: {ours.get(k)!r})"
            for k, v in other["config"].items()
            if ours.get(k) != v
        ]
        if diff:
            return (
                f"rank {rank} has another config than rank 0: {', '.join(diff)}; "
                "start every rank with the same flags"
            )
    return ""


def agree_on_config(resolve) -> tuple:
    """This rank's (cfg, run_dir, resume) from `resolve()`, once every rank has
    resolved its own and they agree (one all_gather); a ConfigError naming the rank
    and the fields otherwise, on every rank, before anything trains.

    Book: Beyond one machine.
    """
    try:
        cfg, run_dir, resume = resolve()
        mine = {"config": dataclasses.asdict(cfg), "resume": resume}
    except USAGE_ERRORS as error:
        mine = {"error": str(error)}
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    problem = disagreement(every)
    if problem:
        raise ConfigError(problem)
    return cfg, run_dir, resume


@dataclass
class Report:
    """What one rank tells the others at each sync.

    Book: Beyond one machine.
    """

    steps: int  # agent steps its workers made since the last sync
    updates: int  # updates its workers made since the last sync
    scores: list  # raw scores of the episodes it finished since the last sync
    losses: list  # its workers' UpdateDone reports since the last sync
    stopping: bool  # its workers are stopping (total_steps, time budget, Ctrl-C)
    done: bool  # its workers have exited: it waits for the others to finish
    failure: str = ""  # why it stops abnormally (a worker died, NaN weights)


class DistributedTrainer(Trainer):
    """Chapter 5's `Trainer` on one rank: every `sync_every` seconds it sums what the
    ranks counted and averages their models; rank 0 alone logs and checkpoints.

    Book: Beyond one machine.
    """

    def __init__(self, cfg, run_dir, state, world: World):
        self.world = world
        state = from_rank0(lambda: state)  # rank 0's checkpoint, or None (fresh)
        world.state_shared = True
        super().__init__(cfg, run_dir, state)
        broadcast_parameters(self.model)  # a fresh run starts from rank 0's weights
        self.counted = (self.counters.steps.value, self.counters.updates.value)
        self.session_start, self.own_steps = self.counted[0], 0
        self.scores, self.losses = [], []  # this rank's, since the last sync
        self.synced_at = 0.0  # clock time of the last sync (0: none yet)
        self.stopping = False  # some rank is stopping: sync at every tick
        self.over = False  # no more syncs: every rank is done, or one failed

    def handle(self, event) -> None:
        """Keep episodes and losses for the next sync; they count when every rank
        has heard of them."""
        if isinstance(event, EpisodeEnd):
            self.scores.append(event.score)
        elif isinstance(event, UpdateDone):
            self.losses.append(event)
        else:
            super().handle(event)

    def fail(self, message: str) -> None:
        """A failure on this rank, named so that every rank's error says where."""
        super().fail(f"rank {self.world.rank}: {message}")

    def keep_up(self, log, final: bool = False) -> None:
        """Sync when due (at the end: until every rank is done), then the `Trainer`'s
        own bookkeeping, logging and checkpointing."""
        if final:
            while not self.over:
                time.sleep(max(0.0, self.next_sync() - time.monotonic()))
                self.sync(done=True)
        elif not self.over and time.monotonic() >= self.next_sync():
            self.sync(done=False)
        super().keep_up(log, final)

    def next_sync(self) -> float:
        """Clock time of the next sync: every tick once some rank is stopping."""
        period = 0.0 if self.stopping else self.cfg.sync_every
        return (self.synced_at or self.started) + period

    def sync(self, done: bool) -> None:
        """Exchange reports with every rank, count what they did and average the
        models; if a collective fails, stop with a message naming the lost rank.

        Book: Beyond one machine.
        """
        params = list(self.model.parameters())
        snapshot = flatten(params)  # (P,) the weights this rank adds to the mean
        if not torch.isfinite(snapshot).all():
            self.fail("the weights are NaN or inf")  # never spread them to the others
        try:
            reports = [None] * self.world.size
            dist.all_gather_object(reports, self.report(done))
            self.take_in(reports)
            if self.decide(reports):
                merge_(params, snapshot, mean_over_ranks(snapshot))
        except RuntimeError as error:  # gloo's DistError: a rank died or went silent
            self.over = True
            Trainer.fail(self, lost_rank_message(self.world, error))
        self.synced_at = time.monotonic()

    def report(self, done: bool) -> Report:
        """This rank's news since the last sync."""
        steps = self.counters.steps.value - self.counted[0]
        updates = self.counters.updates.value - self.counted[1]
        scores, losses, self.scores, self.losses = self.scores, self.losses, [], []
        stopping = self.stop.is_set()
        failure = self.failure or ""
        return Report(steps, updates, scores, losses, stopping, done, failure)

    def take_in(self, reports: list[Report]) -> None:
        """Add the other ranks' steps and updates to this rank's shared counters (the
        workers read them: total_steps and the learning rate schedule are global),
        and every rank's episodes and losses to the run's progress and log."""
        mine = reports[self.world.rank]
        steps = sum(r.steps for r in reports)
        updates = sum(r.updates for r in reports)
        self.counters.add(steps - mine.steps, updates - mine.updates)
        self.counted = (self.counted[0] + steps, self.counted[1] + updates)
        self.own_steps += mine.steps
        for r in reports:  # in rank order: the running mean sees every rank's episodes
            for score in r.scores:
                # the count after this sync: the same on every rank, so are the cuts
                self.record_episode(score, self.counted[0])
            if self.world.rank == 0:
                self.updates.extend(r.losses)  # the log's losses are every rank's

    def decide(self, reports: list[Report]) -> bool:
        """What every rank concludes alike from the same reports: stop on a failure
        (no average: the failed rank's weights may be bad), stop when any rank stops,
        end the syncs when every rank is done. Returns whether to average now."""
        failures = [r.failure for r in reports if r.failure]
        if failures:
            self.over = True
            Trainer.fail(self, failures[0])
            return False
        if any(r.stopping or r.done for r in reports):
            self.stopping = True
            self.stop.set()
        self.over = all(r.done for r in reports)
        return True

    def save(self) -> None:
        if self.world.rank == 0:
            super().save()

    def write_log(self, log, now: float) -> None:
        if self.world.rank == 0:
            super().write_log(log, now)

    def run(self, log, show_progress: bool):
        """The `Trainer`'s run (progress bar on rank 0 only), then one line saying how
        many of the session's agent steps this rank's workers made."""
        progress = super().run(log, show_progress and self.world.rank == 0)
        session = progress.agent_steps - self.session_start
        print(
            f"rank {self.world.rank}: {self.own_steps} of the session's {session} "
            "agent steps",
            flush=True,
        )
        return progress


def share_error(error: Exception) -> None:
    """On rank 0: send the usage error that stopped it before it could send its
    starting state to the other ranks, which wait for it (see `from_rank0`)."""
    dist.broadcast_object_list([("error", f"rank 0: {error}")], src=0)


def train_rank(cfg, run_dir, resume: bool, args, world: World):
    """`train` with a `DistributedTrainer`; returns the `Progress`. If rank 0 stops
    before it has sent its starting state (its run folder is refused), the others,
    which wait for that state, get its error instead."""
    trainer_class = functools.partial(DistributedTrainer, world=world)
    try:
        return train(
            cfg,
            run_dir,
            resume,
            show_progress=not args.no_progress,
            trainer_class=trainer_class,
        )
    except USAGE_ERRORS as error:
        if world.rank == 0 and not world.state_shared:
            share_error(error)
        raise


def cmd_train(args, world: World, train_config) -> int:
    """`python -m a3c_core train` as one rank of a torchrun launch: join, agree on the
    config, train with a `DistributedTrainer`. `train_config` is the CLI's (the saved
    config it resumes from is rank 0's). Rank 0 writes the run folder; the others
    write their (unused) files into a scratch folder, removed at the end.

    Book: Beyond one machine.
    """
    join(world)
    scratch = None
    try:
        saved = from_rank0(
            lambda: args.resume and load_training_checkpoint(args.resume)["config"]
        )
        cfg, run_dir, resume = agree_on_config(lambda: train_config(args, saved))
        doing = "resuming" if resume else "training"
        print(f"rank {world.rank}: {doing} {cfg.env_id} in {run_dir}", flush=True)
        if world.rank > 0:
            scratch = run_dir = Path(tempfile.mkdtemp(prefix=f"a3c-rank{world.rank}-"))
            resume = False
        cfg = rank_config(cfg, world.rank)
        progress = train_rank(cfg, run_dir, resume, args, world)
        if world.rank == 0:
            print(f"stopped at {progress.agent_steps} agent steps; saved in {run_dir}")
        return 0
    finally:
        leave(world)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
