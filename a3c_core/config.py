"""Every hyperparameter of a3c_core, declared once (chapter 5, "Workers and training").

`A3CConfig` is a frozen dataclass with a docstring under each field. The command line
(`a3c_core.cli`), the book (`dataclasses.replace(A3CConfig(), ...)`) and every
checkpoint (`config.json`) use it, so a run is always described by the same names.
`SEED_PRESET` keeps baby-a3c's original values (20 single-environment workers,
lr 1e-4) for anyone who wants the seed's exact training setup.
"""

import ast
import dataclasses
import inspect
import json
import math
from dataclasses import dataclass

CONV_DTYPES = ("auto", "float32", "bfloat16")


class ConfigError(ValueError):
    """A hyperparameter value that makes no sense; the message says how to fix it."""


@dataclass(frozen=True)
class A3CConfig:
    """Every hyperparameter of a run; frozen, validated, saved as config.json.

    Book: chapter 5.
    """

    env_id: str = "Pong-v4"
    """Gymnasium id of the Atari game, e.g. Pong-v4, Breakout-v4, ALE/Pong-v5."""

    num_workers: int = 2
    """Worker processes updating the shared model asynchronously (one per core)."""

    envs_per_worker: int = 8
    """Environments one worker steps in lockstep and batches through the network.
    1 is classic A3C; more amortises the network over a batch (faster per step)."""

    learn_groups: int = 1
    """Updates a worker makes from one rollout: it splits its games into this many
    equal groups and steps the shared optimizer once per group, every gradient taken
    at the weights it acted with (1: one update per rollout). More updates per agent
    step, as fewer games per worker give, while acting keeps its large batches. Must
    divide envs_per_worker."""

    rollout_len: int = 20
    """Agent steps per environment between two updates (truncated BPTT length)."""

    gamma: float = 0.99
    """Discount factor of the returns."""

    gae_lambda: float = 1.0
    """GAE lambda; 1.0 makes advantages equal n-step returns minus values."""

    lr: float = 5e-4
    """Adam learning rate (the seed used 1e-4 with 20 one-environment workers)."""

    lr_decay_steps: int = 0
    """Agent steps over which the learning rate falls linearly from lr to 0, as in
    A2C and PPO (0: constant). Past them it stays 0."""

    lr_plateau_cuts: int = 0
    """How many times the trainer may cut the learning rate when the training score
    stops rising (0: never). The pretrained runs were cut once, by hand, where their
    running mean had stalled; this does it when the run gets there."""

    lr_plateau_factor: float = 0.25
    """Each cut multiplies the learning rate by this factor."""

    lr_plateau_window: int = 250_000
    """Agent steps per window of the plateau test: the score has stalled when the
    mean return of the episodes ending in each of `lr_plateau_patience` windows in a
    row is no higher than the best window mean since the start (or the last cut),
    once that best is a standard deviation above the first window's mean (a flat
    start is not a stall). Means against means, not a threshold in points, so it
    works alike for any game's scores."""

    lr_plateau_patience: int = 3
    """Windows without a new best mean before a cut. More waits longer: fewer cuts
    during a slow rise, later cuts on a real plateau."""

    entropy_coef: float = 0.01
    """Weight of the entropy bonus, summed over the rollout: the seed's 0.01. A quarter
    of it took off sooner on Pong and fell behind on Breakout, one pair each
    (benchmarks/learning_speed, items 42 and 44)."""

    entropy_plateau_factor: float = 1.0
    """Each plateau cut (`lr_plateau_cuts`) also multiplies the entropy bonus by
    this factor (1: the bonus stays). The bonus keeps a young policy exploring; at
    the top it keeps a good policy from getting sharp."""

    value_coef: float = 0.5
    """Weight of the value loss 0.5 * sum((returns - values)^2): 0.25 in all, as the
    seed."""

    max_grad_norm: float = 40.0
    """Gradient norm clip applied to each worker's gradient before the shared step."""

    hidden_size: int = 256
    """Size of the GRU memory."""

    conv_dtype: str = "float32"
    """Precision of the convolutions while training: float32, bfloat16 (faster on
    CPUs with AVX512_BF16 or AMX, slower elsewhere; the weights stay float32), or
    auto: bfloat16 where the CPU has it natively, float32 elsewhere. Per agent step
    bfloat16 learned Pong and Breakout as float32 did; on SpaceInvaders it was level
    at 60 minutes and behind on average at 120 in two pairs of runs
    (benchmarks/learning_speed, items 2, 16-18)."""

    total_steps: int = 40_000_000
    """Agent steps (env.step calls, all workers) after which training stops."""

    max_episode_steps: int = 10_000
    """Agent steps after which an episode is cut (a stuck agent cannot play forever)."""

    reward_clip: float = 1.0
    """Rewards are clipped to [-reward_clip, reward_clip] for learning, not scores."""

    seed: int = 1
    """Seed of environments, action sampling and initial weights."""

    train_minutes: float = 0.0
    """Wall-clock minutes of training, summed over resumes, after which the run stops
    (0: no limit). A budget in time, not steps, is what compares setups per hour."""

    checkpoint_every: float = 180.0
    """Seconds between checkpoints (also written on Ctrl-C / SIGTERM and at the end)."""

    log_every: float = 60.0
    """Seconds between log lines (printed and appended to log.csv)."""

    return_horizon: float = 0.99
    """Running mean of episode returns: mean <- horizon * mean + (1 - horizon) *
    return, as the seed logged it."""

    sync_every: float = 5.0
    """Seconds between two averages of the machines' models when torchrun trains one
    agent on several (a3c_core.distributed; no effect on one machine). Longer lets
    the models drift further apart between averages: it changes learning."""

    def __post_init__(self):
        for problem in _problems(self):
            raise ConfigError(problem)

    @property
    def agent_steps_per_update(self) -> int:
        """Agent steps one update learns from: a rollout of rollout_len steps of
        one group of a worker's games."""
        return self.rollout_len * self.envs_per_worker // self.learn_groups

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "A3CConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**values)


MAX_SEED = 2**31 - 1  # numpy seeds are < 2**32; workers add offsets to the seed
MAX_COUNT = 2**53  # agent steps are counted in int64 and shown as floats


def _type_problems(cfg: A3CConfig) -> list[str]:
    """Fields of the wrong type, and floats that are NaN or infinite."""
    problems = []
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), f.type
        if kind in (int, "int"):
            ok = isinstance(value, int) and not isinstance(value, bool)
            what = "a whole number"
        elif kind in (float, "float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            what = "a finite number"
        else:
            ok, what = isinstance(value, str) and value != "", "a non-empty string"
        if not ok:
            problems.append(f"{f.name} must be {what}, got {value!r}")
    return problems


def _problems(cfg: A3CConfig) -> list[str]:
    """Every value that cannot work, as one-line messages."""
    types = _type_problems(cfg)
    if types:
        return [f"invalid config: {msg}" for msg in types]
    checks = [
        (1 <= cfg.num_workers <= 1024, "num_workers must be in 1..1024"),
        (1 <= cfg.envs_per_worker <= 1024, "envs_per_worker must be in 1..1024"),
        (
            1 <= cfg.learn_groups <= cfg.envs_per_worker
            and cfg.envs_per_worker % cfg.learn_groups == 0,
            "learn_groups must divide envs_per_worker (say 1, 2 or 4 of 8 games)",
        ),
        (1 <= cfg.rollout_len <= 10_000, "rollout_len must be in 1..10000"),
        (0.0 < cfg.gamma <= 1.0, "gamma must be in (0, 1]"),
        (0.0 <= cfg.gae_lambda <= 1.0, "gae_lambda must be in [0, 1]"),
        (0.0 < cfg.lr <= 1.0, "lr must be in (0, 1]"),
        (
            0 <= cfg.lr_decay_steps <= MAX_COUNT,
            f"lr_decay_steps must be in 0..{MAX_COUNT} (0: constant lr)",
        ),
        (0 <= cfg.lr_plateau_cuts <= 100, "lr_plateau_cuts must be in 0..100"),
        (
            0.0 < cfg.lr_plateau_factor < 1.0,
            "lr_plateau_factor must be in (0, 1): a cut makes the rate smaller",
        ),
        (
            1 <= cfg.lr_plateau_window <= MAX_COUNT,
            f"lr_plateau_window must be in 1..{MAX_COUNT} (agent steps)",
        ),
        (
            1 <= cfg.lr_plateau_patience <= 10_000,
            "lr_plateau_patience must be in 1..10000 (windows)",
        ),
        (0.0 <= cfg.entropy_coef <= 100.0, "entropy_coef must be in [0, 100]"),
        (
            0.0 <= cfg.entropy_plateau_factor <= 1.0,
            "entropy_plateau_factor must be in [0, 1] (1: cuts keep the bonus)",
        ),
        (0.0 <= cfg.value_coef <= 100.0, "value_coef must be in [0, 100]"),
        (cfg.max_grad_norm > 0.0, "max_grad_norm must be positive"),
        (1 <= cfg.hidden_size <= 65_536, "hidden_size must be in 1..65536"),
        (
            cfg.conv_dtype in CONV_DTYPES,
            f"conv_dtype must be one of {sorted(CONV_DTYPES)}",
        ),
        (1 <= cfg.total_steps <= MAX_COUNT, f"total_steps must be in 1..{MAX_COUNT}"),
        (cfg.train_minutes >= 0.0, "train_minutes must be >= 0 (0: no limit)"),
        (
            1 <= cfg.max_episode_steps <= MAX_COUNT,
            f"max_episode_steps must be in 1..{MAX_COUNT}",
        ),
        (cfg.reward_clip > 0.0, "reward_clip must be positive"),
        (0 <= cfg.seed <= MAX_SEED, f"seed must be in 0..{MAX_SEED}"),
        (cfg.checkpoint_every > 0.0, "checkpoint_every must be positive (seconds)"),
        (cfg.log_every > 0.0, "log_every must be positive (seconds)"),
        (0.0 <= cfg.return_horizon < 1.0, "return_horizon must be in [0, 1)"),
        (0.0 < cfg.sync_every <= 3600.0, "sync_every must be in (0, 3600] (seconds)"),
    ]
    return [f"invalid config: {msg}" for ok, msg in checks if not ok]


def field_docs(cls=A3CConfig) -> dict[str, str]:
    """The docstring written under each dataclass field, read from the source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


SEED_PRESET = A3CConfig(
    # every field that changes learning is named, so a new default (say bfloat16
    # convolutions) never leaks into the seed's setup; values from baby-a3c.py
    num_workers=20,  # --processes 20
    envs_per_worker=1,
    learn_groups=1,
    rollout_len=20,  # --rnn_steps 20
    gamma=0.99,
    gae_lambda=1.0,  # --tau 1.0
    lr=1e-4,
    lr_decay_steps=0,
    lr_plateau_cuts=0,  # a constant learning rate
    lr_plateau_factor=0.25,  # the next three do nothing without cuts
    lr_plateau_window=250_000,
    lr_plateau_patience=3,
    entropy_coef=0.01,
    entropy_plateau_factor=1.0,
    value_coef=0.5,
    max_grad_norm=40.0,
    hidden_size=256,
    conv_dtype="float32",
    total_steps=80_000_000,  # 8e7 frames
    max_episode_steps=10_000,  # episode_length >= 1e4
    reward_clip=1.0,
    seed=1,
    return_horizon=0.99,  # --horizon 0.99
)
"""baby-a3c's own setup: 20 one-environment workers, Adam lr 1e-4, 80M agent steps."""

RUN_CONTROL = frozenset(
    {"total_steps", "train_minutes", "checkpoint_every", "log_every"}
)
"""Fields that set how long a run goes and how often it logs and saves, not what it
learns: a resume that changes only these (say `--total-steps 80000000`, to go on past
40M) trains the agent as before. `config_changes.jsonl` records them all the same."""
