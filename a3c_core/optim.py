"""A shared Adam optimizer for Hogwild training (chapter 4).

Every worker process holds the same `SharedAdam`: its moment estimates and its step
count live in shared memory, so each worker's update sees the others' statistics.
baby-a3c meant to do this, but its `step` override was indented inside `__init__`
(dead code) and it stored an int `step`, which modern torch rejects. Here the state
is created once, up front, as shared tensors (a float tensor `step`, which is what
torch's Adam keeps), and torch's own `Adam.step` updates it in place.

`hand_over_grads` gives a worker's fresh local gradients to the shared parameters.
The seed linked them once and relied on `zero_grad` to clear them; since torch 2.0
`zero_grad` sets grads to None, so its local gradients accumulated forever.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch


class SharedAdam(torch.optim.Adam):
    """torch's Adam with all its state (step, moments) created up front, shared.

    Book: chapter 4.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        # foreach=False: the per-tensor path updates state tensors strictly in place
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=False)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32).share_memory_()
                state["exp_avg"] = torch.zeros_like(p).share_memory_()
                state["exp_avg_sq"] = torch.zeros_like(p).share_memory_()

    def load_shared_state(self, state_dict: dict) -> None:
        """Copy a saved `state_dict()` into the existing shared tensors (resume)."""
        saved = state_dict["state"]
        params = [p for group in self.param_groups for p in group["params"]]
        if len(saved) != len(params):
            raise ValueError(
                f"optimizer state has {len(saved)} tensors, expected {len(params)}"
            )
        for index, p in enumerate(params):
            for key, shared in self.state[p].items():
                shared.copy_(saved[index][key])


def hand_over_grads(local: torch.nn.Module, shared: torch.nn.Module) -> None:
    """Point the shared parameters' grads at this update's local grads (no copy).

    The local grads must be fresh: the caller clears them (set to None) before
    each backward pass, so nothing accumulates across updates.

    Book: chapter 4.
    """
    for local_p, shared_p in zip(local.parameters(), shared.parameters()):
        shared_p.grad = local_p.grad


def pull_params(local: torch.nn.Module, shared: torch.nn.Module) -> None:
    """Copy the shared weights into the local model in place (no state dict).

    Book: chapter 4.
    """
    with torch.no_grad():
        for local_p, shared_p in zip(local.parameters(), shared.parameters()):
            local_p.copy_(shared_p)


def scheduled_lr(cfg, agent_steps: int, cuts: int = 0) -> float:
    """The learning rate after `agent_steps` and `cuts` plateau cuts: cfg.lr times
    cfg.lr_plateau_factor per cut (at most cfg.lr_plateau_cuts count), and falling
    linearly to 0 over cfg.lr_decay_steps if set (A2C and PPO anneal it so).

    Book: chapter 5.
    """
    lr = cfg.lr * cfg.lr_plateau_factor ** min(cuts, cfg.lr_plateau_cuts)
    if cfg.lr_decay_steps == 0:
        return lr
    return lr * max(0.0, 1.0 - agent_steps / cfg.lr_decay_steps)


def scheduled_bonus(cfg, cuts: int = 0):
    """`cfg` with its entropy bonus after `cuts` plateau cuts: cfg.entropy_coef
    times cfg.entropy_plateau_factor per cut (at most cfg.lr_plateau_cuts count).
    The loss reads the bonus from the config it is given.

    Book: chapter 5.
    """
    cuts = min(cuts, cfg.lr_plateau_cuts)
    if cuts == 0 or cfg.entropy_plateau_factor == 1.0:
        return cfg
    bonus = cfg.entropy_coef * cfg.entropy_plateau_factor**cuts
    return dataclasses.replace(cfg, entropy_coef=bonus)


@dataclass
class Plateau:
    """Tells when the training score has stopped rising, from finished episodes.

    The episodes that end within each `window` agent steps make one window mean. A
    mean above the best so far is progress; `patience` windows in a row without one
    are a plateau, and the test starts over (the best is forgotten: after a cut the
    score may rise again). Means of whole windows against each other need no
    threshold in points, so one setting serves Pong's -21..21 and SpaceInvaders'
    hundreds; windows of agent steps, not of episodes, because early episodes are
    short (Breakout's last seconds) and a slow rise must show within one window.
    Only a run that has learned can stall: until the best window mean is more than
    one standard deviation of the first window's returns above that window's mean,
    nothing is a plateau (SpaceInvaders stays flat for its first ~2.5M agent steps).

    Book: chapter 5.
    """

    window: int
    patience: int
    total: float = 0.0  # sum, sum of squares and count of the returns in the
    squares: float = 0.0  # window being filled
    count: int = 0
    start: int | None = None  # agent steps where that window began
    floor: float | None = None  # first window's mean + std: the best must pass it
    best: float = -math.inf
    stale: int = 0  # windows since the best

    def stalled(self, episode_return: float, agent_steps: int) -> bool:
        """Count an episode that ended at `agent_steps`. The first episode past a
        window's end closes it and opens the next; True when that window is the
        last of a plateau."""
        self.start = agent_steps if self.start is None else self.start
        closed = agent_steps - self.start >= self.window
        mean = self.close(agent_steps) if closed else 0.0
        self.total += episode_return
        self.squares += episode_return**2
        self.count += 1
        return closed and self.judge(mean)

    def close(self, agent_steps: int) -> float:
        """The mean of the window ending here (the first one sets `floor`); the
        next window opens at `agent_steps`."""
        mean = self.total / self.count
        if self.floor is None:
            spread = math.sqrt(max(0.0, self.squares / self.count - mean**2))
            self.floor = mean + spread
        self.total, self.squares, self.count, self.start = 0.0, 0.0, 0, agent_steps
        return mean

    def judge(self, mean: float) -> bool:
        """Is the window just closed, with this mean, the last of a plateau?"""
        if mean > self.best:
            self.best, self.stale = mean, 0
            return False
        if self.best <= self.floor:  # not above where it started: not learning yet
            return False
        self.stale += 1
        if self.stale < self.patience:
            return False
        self.best, self.stale = -math.inf, 0
        return True

    def state(self) -> dict:
        """What a checkpoint keeps of the test, so that a resume goes on with it
        (`Plateau(window, patience, **state)`) instead of starting over."""
        return {name: getattr(self, name) for name in PLATEAU_STATE}


PLATEAU_STATE = ("total", "squares", "count", "start", "floor", "best", "stale")


def plausible_plateau(state) -> bool:
    """Could `Plateau.state()` have returned this?"""
    if not isinstance(state, dict) or set(state) != set(PLATEAU_STATE):
        return False
    total, squares, count, start, floor, best, stale = (state[k] for k in PLATEAU_STATE)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (count, stale)):
        return False
    if start is None:  # no episode yet: no window opened, none closed
        window = count == 0 and floor is None
    else:  # an open window holds at least the episode that opened it
        window = isinstance(start, int) and start >= 0 and count >= 1
    sums = all(
        isinstance(v, int | float) and math.isfinite(v) for v in (total, squares)
    )
    floor_ok = floor is None or (
        isinstance(floor, int | float) and math.isfinite(floor)
    )
    best_ok = isinstance(best, int | float) and best < math.inf  # -inf at first
    return window and sums and squares >= 0 and floor_ok and best_ok and stale >= 0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (this process's copy)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
