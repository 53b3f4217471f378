"""One A3C worker process: act, learn, update the shared model (chapter 5).

A worker plays `envs_per_worker` games in lockstep with a local copy of the shared
model, one batched forward pass per step (`collect`). Every `rollout_len` steps it
makes one `update` (or one per group of its games, `learn_groups`): it computes the
A3C loss of the rollout, backpropagates through it, clips its gradient and applies it
to the shared model with the shared optimizer, without waiting for the other workers
(Hogwild). Then it copies the shared weights back and goes on. It reports to the
trainer with small events (`EpisodeEnd`, `UpdateDone`, `WorkerFailed`) on a queue.

It acts without an autograd graph but keeps every layer's activations, and learns
by replaying the rollout (chapter 2): the convolutions' backward pass runs once for
all T * K frames and the GRU's input weights see one large matrix product, which a
CPU does much faster than T small batches. Nothing is computed twice except the
cheap GRU and heads.
"""

import contextlib
import fcntl
import multiprocessing as mp
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .envs import AtariBatch
from .loss import LossTerms, a3c_loss
from .network import ActorCritic, conv_precision
from .optim import (
    hand_over_grads,
    pull_params,
    scheduled_bonus,
    scheduled_lr,
    set_lr,
)
from .policy import choose_actions


class NonFiniteLoss(RuntimeError):
    """The loss or the network became NaN or infinite: the run stops, no update."""


class SharedCounters:
    """Agent steps and updates of all workers, exact: every change holds the lock;
    and the trainer's count of learning-rate cuts, which workers only read.

    Book: chapter 4 and chapter 5.
    """

    def __init__(self, ctx, steps: int = 0, updates: int = 0, lr_cuts: int = 0):
        self.lock = ctx.Lock()
        self.steps = ctx.Value("q", steps, lock=False)
        self.updates = ctx.Value("q", updates, lock=False)
        self.lr_cuts = ctx.Value("q", lr_cuts, lock=False)  # one writer: the trainer

    def add(self, steps: int, updates: int) -> int:
        """Count one update's steps; returns the new total of agent steps."""
        with self.lock:
            self.steps.value += steps
            self.updates.value += updates
            return self.steps.value


class UpdateFence:
    """A read-write lock that makes every checkpoint one consistent snapshot.

    A worker holds it shared while it steps the shared optimizer and counts that
    update, so workers still update together (Hogwild); the trainer holds it
    exclusive while it copies the weights, Adam's state and the counters, which
    then hold whole updates only (Adam's per-parameter step count may still lag
    by an increment two workers raced on: Hogwild). It is a `flock` on an empty
    file, `path`, because the OS releases a flock when its holder dies: a killed
    trainer or worker never leaves the others waiting.

    Book: chapter 5.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.touch()
        self.file = None  # each process opens its own: a flock is per open file

    def __getstate__(self):  # sent to a worker: the path, not this process's file
        return {"path": self.path, "file": None}

    @contextlib.contextmanager
    def held(self, exclusive: bool = False):
        """Hold the fence: shared (a worker's update) or exclusive (a checkpoint)."""
        if self.file is None:
            self.file = open(self.path, "rb")
        fcntl.flock(self.file, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self.file, fcntl.LOCK_UN)

    def remove(self) -> None:
        if self.file is not None:
            self.file.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class EpisodeEnd:
    """A worker's game finished an episode: its raw score and length in agent steps.

    Book: chapter 5.
    """

    score: float
    length: int


@dataclass(frozen=True)
class UpdateDone:
    """A worker updated the shared model: the loss terms of its rollout (sums).

    Book: chapter 5.
    """

    loss: float
    policy_loss: float
    value_loss: float
    entropy: float


@dataclass(frozen=True)
class WorkerFailed:
    """A worker stopped on an error; `message` ends the trainer's one-line report.

    Book: chapter 5.
    """

    rank: int
    message: str
    traceback: str = ""  # the worker's traceback, for errors the run did not expect


@dataclass
class Rollout:
    """T steps of K environments, time-major, and the network's activations.

    Book: chapter 5.
    """

    activations: list  # frames and conv outputs (T * K, C, H, W) each, no graph
    start_hx: torch.Tensor  # (K, H) the GRU memory before the rollout, no graph
    resets: torch.Tensor  # (T, K) bool: an episode starts at this step
    actions: torch.Tensor  # (T, K) long
    rewards: torch.Tensor  # (T, K) clipped
    dones: torch.Tensor  # (T, K) bool: the episode ended at this step


def collect(model, envs, hx, new_episode, rollout_len, generator, events):
    """Play `rollout_len` steps with sampled actions, keeping every activation.

    hx (K, H) is the memory before the rollout and `new_episode` (K) marks games
    whose episode starts now (their memory is reset). Returns the `Rollout`, the
    memory after it and the games that start a new episode next.

    Book: chapter 5.
    """
    start_hx, steps = hx, []
    for _ in range(rollout_len):
        layers = model.activations(torch.from_numpy(envs.obs))  # kept to learn
        with torch.no_grad():
            features = layers[-1].reshape(len(hx), -1).float()  # (K, 800)
            hx = model.gru(features, hx * (~new_episode).unsqueeze(-1))  # (K, H)
            logits = model.actor_linear(hx)  # (K, A)
            if not torch.isfinite(logits).all():
                raise NonFiniteLoss("the network outputs NaN or inf: weights diverged")
            actions = choose_actions(logits, greedy=False, generators=generator)
        reset = new_episode  # games whose memory started from zero at this step
        rewards, dones, finished = envs.step(actions.numpy())
        new_episode = torch.from_numpy(dones)
        steps.append((layers, reset, actions, torch.from_numpy(rewards), new_episode))
        for score, length in finished:
            events.put(EpisodeEnd(score, length))
    layers, resets, actions, rewards, dones = zip(*steps)
    activations = [torch.cat(layer) for layer in zip(*layers)]  # (T * K, C, H, W)
    columns = (torch.stack(c) for c in (resets, actions, rewards, dones))
    rollout = Rollout(activations, start_hx, *columns)
    return rollout, hx, new_episode


def learn(model, rollout, bootstrap, cfg):
    """Backpropagate the A3C loss of a rollout; returns its `LossTerms`.

    Book: chapter 5.
    """
    model.zero_grad(set_to_none=True)  # fresh grads every update
    r, (T, K) = rollout, rollout.actions.shape
    features = model.replay_features(r.activations).reshape(T, K, -1)  # (T, K, 800)
    values, logits = model.unroll(features, r.start_hx, r.resets)  # (T, K), (T, K, A)
    terms = a3c_loss(logits, values, r.actions, r.rewards, r.dones, bootstrap, cfg)
    if not torch.isfinite(terms.total):
        raise NonFiniteLoss(f"the loss is {terms.total.item()} (NaN or inf)")
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    return terms


def channels_last_copy(x):
    """(T, k, C, H, W) -> (T * k, C, H, W) channels_last, as the convolutions' backward
    wants it, in one copy (`flatten` then `contiguous` would copy twice, through the
    other memory format)."""
    out = torch.empty(
        (x.shape[0] * x.shape[1], *x.shape[2:]),
        dtype=x.dtype,
        memory_format=torch.channels_last,
    )
    out.unflatten(0, x.shape[:2]).copy_(x)
    return out


def split_games(rollout, bootstrap, groups):
    """The rollout's K games in `groups` equal parts, in order: a `Rollout` of
    K / groups games and its bootstrap values for each (the rollout itself if 1).

    Book: chapter 5.
    """
    if groups == 1:
        return [(rollout, bootstrap)]
    (T, K), r = rollout.actions.shape, rollout
    parts = []
    for first in range(0, K, K // groups):
        games = slice(first, first + K // groups)
        layers = [
            channels_last_copy(x.unflatten(0, (T, K))[:, games]) for x in r.activations
        ]
        columns = (c[:, games] for c in (r.resets, r.actions, r.rewards, r.dones))
        parts.append((Rollout(layers, r.start_hx[games], *columns), bootstrap[games]))
    return parts


def update(
    model, shared_model, optimizer, rollout, bootstrap, cfg, counters=None, fence=None
) -> list[LossTerms]:
    """Asynchronous updates from one rollout: for each group of its games
    (`cfg.learn_groups`, `split_games`) learn, hand the gradient to the shared
    model, step the shared optimizer (no lock between workers: Hogwild, chapter 4)
    and count the update in `counters`; then copy the new shared weights back. So
    every group's gradient is taken at the weights the worker acted with. A step
    and its count hold the `fence` (shared with the other workers), so a checkpoint
    sees both or neither. bootstrap (K) = V(s_T); returns each update's `LossTerms`.

    Book: chapter 5.
    """
    terms = []
    for part, part_bootstrap in split_games(rollout, bootstrap, cfg.learn_groups):
        terms.append(learn(model, part, part_bootstrap, cfg))
        hand_over_grads(model, shared_model)
        with fence.held() if fence else contextlib.nullcontext():  # see UpdateFence
            optimizer.step()
            if counters is not None:  # T * K / learn_groups agent steps
                counters.add(steps=part.actions.numel(), updates=1)
    pull_params(model, shared_model)
    return terms


def run_worker(rank, cfg, shared_model, optimizer, counters, events, stop, fence=None):
    """The worker loop: collect a rollout, bootstrap, update and count, report.

    Book: chapter 5.
    """
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    K = cfg.envs_per_worker
    env_seed = cfg.seed + 10_000 * rank + counters.steps.value  # new games on resume
    envs = AtariBatch(cfg.env_id, K, env_seed, cfg.max_episode_steps, cfg.reward_clip)
    conv_dtype = conv_precision(cfg.conv_dtype)  # bfloat16: faster convolutions
    model = ActorCritic(
        shared_model.actor_linear.out_features, cfg.hidden_size, conv_dtype
    )
    model = model.to(memory_format=torch.channels_last)
    pull_params(model, shared_model)
    hx, new_episode = model.initial_state(K), torch.ones(K, dtype=torch.bool)
    trainer = mp.parent_process()  # if the trainer is killed, stop too
    while not stop.is_set() and counters.steps.value < cfg.total_steps:
        if trainer is not None and not trainer.is_alive():
            break
        rollout, hx, new_episode = collect(
            model, envs, hx, new_episode, cfg.rollout_len, generator, events
        )
        with torch.no_grad():  # V(s_T); ignored by the loss where the game just ended
            bootstrap, _, _ = model(torch.from_numpy(envs.obs), hx)
        # learn replays the memory from rollout.start_hx, a constant: truncated BPTT
        cuts = counters.lr_cuts.value  # plateau cuts so far (the trainer makes them)
        set_lr(optimizer, scheduled_lr(cfg, counters.steps.value, cuts))
        loss_cfg = scheduled_bonus(cfg, cuts)  # cfg, or a copy with a smaller bonus
        updates = update(
            model,
            shared_model,
            optimizer,
            rollout,
            bootstrap,
            loss_cfg,
            counters,
            fence,
        )
        del rollout  # frees its activations before the next rollout allocates its own
        for terms in updates:
            loss = terms.total.item()
            events.put(UpdateDone(loss, terms.policy, terms.value, terms.entropy))
    envs.close()


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
"""What a terminal (Ctrl-C), `docker stop`, systemd or Slurm send to a whole process
group. The trainer stops the run on them; workers ignore them."""


def worker_main(rank, cfg, shared_model, optimizer, counters, events, stop, fence=None):
    """Process entry point: deaf to stop signals, one torch thread, and any error
    reported to the trainer.

    Book: chapter 5.
    """
    # Born with the stop signals blocked (Trainer.start_workers): ignore them, then
    # unblock. A signal to the whole group is the trainer's to handle: it stops us
    # after the current update and saves a final checkpoint.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    torch.set_num_threads(1)
    try:
        run_worker(rank, cfg, shared_model, optimizer, counters, events, stop, fence)
    except NonFiniteLoss as error:
        events.put(WorkerFailed(rank, f"stopped the run: {error}"))
        raise SystemExit(3) from None
    except BaseException:
        trace = traceback.format_exc()
        last_line = trace.strip().splitlines()[-1]
        events.put(WorkerFailed(rank, f"failed: {last_line}", trace))
        raise SystemExit(1) from None
