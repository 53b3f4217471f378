"""Forks of our runs: the same agent resumed with one hyperparameter changed.

The book's "Experiments" appendix reads these numbers; the data are committed in
book/data/<game>-forks/ (each README says how every fork was made) beside the main
runs in pretrained/<game>/. A fork shares the main run's checkpoint, so over a window
of agent steps the two runs differ in the changed field and in their randomness only.

The logs keep a running mean of episode returns (m <- 0.99 m + 0.01 R), not the
returns, so this module recovers what can be recovered from them:

- `own_mean`: the weighted mean of the returns that moved the running mean over a
  window, exact up to the log's rounding; `own_stderr` its standard error in units of
  one episode's standard deviation sigma;
- sigma, from returns recovered one by one (rows that ended a single episode,
  `single_returns`), or from the scatter of the rows' own means (`row_scatter`), which
  a trend inside the window inflates;
- `gap`: a fork's own mean minus the main run's, in standard errors.

    python benchmarks/forks.py          # every study's table, as the appendix shows

Not here: anything that trains. Forks are made with the CLI (`train --resume DIR
--lr ...`), as the data READMEs show.
"""

import dataclasses
import json
import math
from collections import namedtuple
from pathlib import Path

import numpy as np

from a3c_core.config import RUN_CONTROL, A3CConfig
from a3c_core.runs import (
    PRETRAINED,
    changed_at,
    config_at,
    read_config_changes,
    read_log,
)

DATA = Path(__file__).resolve().parent.parent / "book" / "data"
RULE_SE = 2  # switch only if ahead by more than this many SE, and in both halves
STRETCH = 2e6  # agent steps per stretch when a run's level is summarised

BranchMeans = namedtuple("BranchMeans", "main fork gap sigma")
"""window_mean of the main run and of a fork over one window, the fork's lead in SE
(fork minus main run) and sigma, one episode's standard deviation (row scatter)."""


def columns(path) -> dict[str, np.ndarray]:
    """A run's log.csv (a folder or a CSV) as one float array per column."""
    return as_columns(read_log(path))


def as_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Log rows (read_log's, or a learning_speed result's curve) as one float array
    per column, NaN where a value is missing."""
    return {
        key: np.array([np.nan if r[key] is None else r[key] for r in rows], float)
        for key in rows[0]
    }


def learning_fields(fields: dict) -> dict:
    """The fields of a config or of a recorded change that change what is learned."""
    return {k: v for k, v in fields.items() if k not in RUN_CONTROL}


def at(log, column, steps):
    """A log column at the given agent steps, interpolated between rows."""
    return np.interp(steps, log["agent_steps"], log[column])


def own_mean(first, last, episodes, horizon=0.99):
    """Weighted mean return of the `episodes` that moved the running mean from
    `first` to `last` (m_n = h^n m_0 + (1 - h^n) R)."""
    kept = horizon**episodes
    return (last - kept * first) / (1 - kept)


def own_stderr(episodes, horizon=0.99):
    """Standard error of own_mean in units of one episode's standard deviation:
    sqrt(sum w^2) / sum w for the weights w_k = h^k."""
    weights = horizon ** np.arange(round(episodes))
    return math.sqrt((weights**2).sum()) / weights.sum()


def single_returns(log, start, end, horizon=0.99):
    """Exact returns wherever one episode ended between two rows inside [start, end]."""
    mean, steps = log["mean_return"], log["agent_steps"]
    one = (np.diff(log["episodes"]) == 1) & (steps[:-1] >= start) & (steps[1:] <= end)
    return ((mean[1:] - horizon * mean[:-1]) / (1 - horizon))[one]


def pooled_std(groups) -> float:
    """Each group of deviations about its own mean, k - 1 degrees of freedom each."""
    squares = sum((z**2).sum() for z in groups)
    return math.sqrt(squares / sum(len(z) - 1 for z in groups))


def gap(pairs, episode_std) -> float:
    """Own-episode gap, fork minus main run, in standard errors of episode noise."""
    own, stderr = pairs["own"], pairs["stderr"]
    return (own[0] - own[1]) / (episode_std * math.hypot(*stderr))


def fork_point(path: Path, log, log_every) -> tuple[float, dict | None]:
    """The agent step from which a fork ran its own config (the checkpoint it
    resumed from) and its recorded change, if it kept its config_changes.jsonl.

    A resumed run writes its first row one log interval (up to half a second late)
    after it starts, with steps_per_s counted from that checkpoint, which can lie
    after the shared first row (the folder copied after a later checkpoint)."""
    rate = log["steps_per_s"][1]
    start = log["agent_steps"][1] - rate * log_every
    if start - log["agent_steps"][0] <= 0.5 * rate:
        start = log["agent_steps"][0]
    recorded = path.with_suffix(".changes.jsonl")
    if not recorded.exists():  # forks made before runs recorded their changes
        return start, None
    change = json.loads(recorded.read_text().splitlines()[-1])
    assert 0 <= start - change["agent_steps"] <= 0.5 * rate, recorded.name
    return change["agent_steps"], change["changed"]


def compare(log, main_log, start, end, horizon=0.99) -> dict:
    """A fork against the main run over [start, end]: (fork, main) pairs of
    episodes, running-mean change, own_mean and own_stderr."""
    near = min((log, main_log), key=lambda run: abs(run["agent_steps"] - start).min())
    first, n0 = at(near, "mean_return", start), at(near, "episodes", start)
    last, main_last = at(log, "mean_return", end), at(main_log, "mean_return", end)
    episodes = at(log, "episodes", end) - n0
    main_episodes = at(main_log, "episodes", end) - n0
    return {
        "episodes": (episodes, main_episodes),
        "change": (last - first, main_last - first),
        "own": (
            own_mean(first, last, episodes, horizon),
            own_mean(first, main_last, main_episodes, horizon),
        ),
        "stderr": (own_stderr(episodes, horizon), own_stderr(main_episodes, horizon)),
    }


def read_fork(path: Path, main_dir: Path, main_log) -> tuple[dict, list]:
    """One fork (path: its <fork>.csv) checked against the main run's log and
    config; returns the fork and its exactly recovered returns (per run)."""
    log = columns(path)
    config = dataclasses.asdict(
        A3CConfig.from_dict(json.loads(path.with_suffix(".config.json").read_text()))
    )
    row = np.flatnonzero(main_log["agent_steps"] == log["agent_steps"][0])
    assert len(row) == 1, f"{path.name}: its first row is not in the main log"
    same = [np.array_equal(main_log[k][row[0]], log[k][0], equal_nan=True) for k in log]
    assert all(same), path.name  # NaN: a column both logs lack (lr, before it)
    start, recorded = fork_point(path, log, config["log_every"])
    main_config = dataclasses.asdict(config_at(main_dir, start))
    horizon = main_config["return_horizon"]
    changed = {
        k: (main_config[k], v)
        for k, v in learning_fields(config).items()
        if v != main_config[k]
    }
    if recorded is not None:
        assert learning_fields(recorded) == {k: list(v) for k, v in changed.items()}
    steps, updates = log["agent_steps"][1:], log["updates"][1:]
    per_update = (steps[-1] - steps[0]) / (updates[-1] - updates[0])
    rollout = config["rollout_len"] * config["envs_per_worker"]
    assert math.isclose(per_update, rollout, rel_tol=0.01), path.name
    # The window ends at the fork's last row, or where the main run's config changed
    # what it learns, if that comes first.
    switches = [s for s in switch_points(main_dir) if s > start]
    end = min([steps[-1], *switches])
    assert main_log["agent_steps"][-1] >= end
    fork = {"log": log, "changed": changed, "start": start, "end": end}
    fork.update(compare(log, main_log, start, end, horizon))
    returns = [single_returns(run, start, end, horizon) for run in (log, main_log)]
    return fork, [r for r in returns if len(r)]


def switch_points(run_dir) -> list[int]:
    """Agent steps at which a run's config changed what it learns."""
    return [
        c["agent_steps"]
        for c in read_config_changes(run_dir)
        if learning_fields(c["changed"])
    ]


def read_forks(main_dir: Path, forks_dir: Path, main_log) -> tuple[dict, list]:
    """Every fork in forks_dir by fork point, and the exactly recovered returns,
    each group about its own mean."""
    forks, groups = {}, []
    for path in forks_dir.glob("*.csv"):
        forks[path.stem], returns = read_fork(path, main_dir, main_log)
        groups += [r - r.mean() for r in returns]
    assert forks and all(fork["changed"] for fork in forks.values())
    return dict(sorted(forks.items(), key=lambda item: item[1]["start"])), groups


def row_mask(log, start, end):
    """Which rows (each from the previous log line to its own) lie inside [start,
    end] and ended episodes: a boolean per log line after the first."""
    steps, new = log["agent_steps"], np.diff(log["episodes"])
    return (steps[:-1] >= start) & (steps[1:] <= end) & (new > 0)


def row_means(log, start, end):
    """For every row inside [start, end] that ended episodes (`row_mask`): own_mean
    of its episodes, own_stderr, and their count."""
    mean, new = log["mean_return"], np.diff(log["episodes"])
    rows = row_mask(log, start, end)
    own = own_mean(mean[:-1][rows], mean[1:][rows], new[rows])
    return own, np.array([own_stderr(n) for n in new[rows]]), new[rows]


def row_scatter(log, start, end):
    """(R_j - R) / s_j for every row inside [start, end]: about sigma each."""
    own, scale, _ = row_means(log, start, end)
    return (own - np.average(own, weights=scale**-2)) / scale


def window_scatter(fork, main_log):
    """row_scatter of the fork and of the main run over the fork's window."""
    return [
        row_scatter(run, fork["start"], fork["end"]) for run in (fork["log"], main_log)
    ]


def set_row_gaps(forks, main_log) -> None:
    """Each fork's gap, with sigma from the row scatter of its own window."""
    for fork in forks.values():
        fork["gap"] = gap(fork, pooled_std(window_scatter(fork, main_log)))


def window_mean(log, start, end):
    """The mean return of every episode ended between rows inside [start, end], and
    its standard error in units of one episode's standard deviation."""
    own, scale, n = row_means(log, start, end)
    return (n * own).sum() / n.sum(), math.sqrt(((n * scale) ** 2).sum()) / n.sum()


def span_means(curve: list[dict], spans) -> list[float]:
    """window_mean over each (start, end) span of minutes of a learning_speed result's
    curve: the mean return of all training episodes that ended in it."""
    log = as_columns([row for row in curve if row["mean_return"] is not None])
    edges = {
        m: np.interp(m, log["minutes"], log["agent_steps"]) for m in sum(spans, ())
    }
    return [window_mean(log, edges[a], edges[b])[0] for a, b in spans]


def stretch_means(log, last, count, width=STRETCH):
    """window_mean over `count` stretches of `width` agent steps ending at `last`."""
    ends = last - width * np.arange(count - 1, -1, -1)
    return np.array([window_mean(log, end - width, end)[0] for end in ends])


def branch_means(fork, main_log) -> dict:
    """BranchMeans over the fork's window and over its two halves."""
    start, end = fork["start"], fork["end"]
    middle = (start + end) / 2
    runs, results = (main_log, fork["log"]), {}
    for a, b in [(start, end), (start, middle), (middle, end)]:
        sigma = pooled_std([row_scatter(run, a, b) for run in runs])
        (main, main_se), (other, other_se) = (window_mean(run, a, b) for run in runs)
        pairs = {"own": (other, main), "stderr": (other_se, main_se)}
        results[(a, b)] = BranchMeans(main, other, gap(pairs, sigma), sigma)
    return results


def passes_rule(leads) -> bool:
    """The decision rule: lead over the whole window above RULE_SE SE and above 0
    in both halves (leads: whole window, first half, second half)."""
    whole, *halves = leads
    return whole > RULE_SE and min(halves) > 0


def branch_minutes(fork) -> float:
    """Minutes a fork ran, from its own log (its first row is the shared one)."""
    elapsed = fork["log"]["elapsed_s"]
    return (elapsed[-1] - elapsed[0]) / 60


def fork_table(forks, digits=2) -> str:
    """Markdown, one row per fork: what it changed, its window, and the mean of its
    own episodes beside the main run's over the same agent steps."""
    table = [
        "| fork | changed (main run → fork) | from | agent steps "
        "| episodes: fork / main | own mean: fork / main | gap (SE) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, fork in forks.items():
        changed = ", ".join(
            f"`{k}` {a:g} → {b:g}" for k, (a, b) in fork["changed"].items()
        )
        table.append(
            f"| `{name}` | {changed} | {fork['start'] / 1e6:.2f}M "
            f"| {(fork['end'] - fork['start']) / 1e6:.2f}M "
            "| {:.0f} / {:.0f} | {:.{d}f} / {:.{d}f} | {:+.1f} |".format(
                *fork["episodes"], *fork["own"], fork["gap"], d=digits
            )
        )
    return "\n".join(table)


def branch_table(results, labels=("main run", "fork"), digits=0) -> str:
    """Markdown: branch_means over a window and its halves; lead = fork - main."""
    table = [
        f"| agent steps | {labels[0]} | {labels[1]} | lead (SE) | sigma |",
        "|---|---|---|---|---|",
    ]
    for (a, b), r in results.items():
        table.append(
            f"| {a / 1e6:.2f}M .. {b / 1e6:.2f}M | {r.main:.{digits}f} "
            f"| {r.fork:.{digits}f} | {r.gap:+.1f} | {r.sigma:.{digits}f} |"
        )
    return "\n".join(table)


@dataclasses.dataclass
class Study:
    """One game's main run and its forks, read and checked."""

    game: str
    main_dir: Path
    main_log: dict
    forks: dict
    exact: list  # exactly recovered returns, each group about its own mean


def study(game: str, pretrained: Path = PRETRAINED, data: Path = DATA) -> Study:
    """The forks of pretrained/<game> kept in book/data/<name>-forks/."""
    main_dir = pretrained / game
    main_log = columns(main_dir)
    forks, exact = read_forks(main_dir, data / f"{game.split('-')[0]}-forks", main_log)
    return Study(game, main_dir, main_log, forks, exact)


def pong_gaps(pong: Study) -> float:
    """Pong's gaps with sigma from its exactly recovered returns; returns sigma."""
    episode_std = pooled_std(pong.exact)
    for fork in pong.forks.values():
        fork["gap"] = gap(fork, episode_std)
    return episode_std


def adopted(s: Study, name: str) -> bool:
    """Whether the main run took the fork's change at the fork point (then the fork
    is the branch left behind, and it shows the change reversed)."""
    return bool(changed_at(s.main_dir, s.forks[name]["start"]))


def per_core_speed(s: Study, name: str, pinned: tuple[int, int]) -> tuple[float, float]:
    """Median agent steps/s of a fork after its first minute, and of the main run's
    rows from pinned[0] to pinned[1] (those that ran on one core, by the data
    README): each run's speed on one core of its own."""
    fork = s.forks[name]["log"]["steps_per_s"][2:]
    steps = s.main_log["agent_steps"]
    rows = (steps >= pinned[0]) & (steps <= pinned[1])
    return float(np.median(fork)), float(np.median(s.main_log["steps_per_s"][rows]))


def same_time(s: Study, name: str, ratio: float) -> tuple[float, float, float]:
    """Per hour instead of per agent step: if the main run makes `ratio` times as
    many agent steps per second as the fork, where was it when the fork's window
    ended? Returns (the main run's agent steps by then, counted from the fork
    point; its running mean then; the fork's last running mean)."""
    fork = s.forks[name]
    steps = fork["start"] + ratio * (fork["end"] - fork["start"])
    assert s.main_log["agent_steps"][-1] > steps
    then = float(at(s.main_log, "mean_return", steps))
    return steps - fork["start"], then, float(fork["log"]["mean_return"][-1])


def plot_fork(ax, name, fork, main_log, labels=("main run", "fork")):
    """A fork's running mean beside the main run's, and both runs' own means over
    the window (dashed)."""
    log, start, end = fork["log"], fork["start"], fork["end"]
    steps = main_log["agent_steps"]
    near = slice(
        np.searchsorted(steps, start - 0.25e6), np.searchsorted(steps, end) + 1
    )
    ax.plot(
        steps[near] / 1e6,
        main_log["mean_return"][near],
        color="tab:blue",
        label=labels[0],
    )
    ax.plot(
        log["agent_steps"] / 1e6,
        log["mean_return"],
        color="tab:orange",
        label=labels[1],
    )
    for own, colour in zip(fork["own"], ("tab:orange", "tab:blue")):
        ax.hlines(own, start / 1e6, end / 1e6, colors=colour, linestyles="--", lw=1)
    ax.axvline(start / 1e6, color="gray", ls=":", lw=1)
    changes = ", ".join(f"{k} {new:g}" for k, (_, new) in fork["changed"].items())
    ax.set_title(f"{name}: {changes}", fontsize=9)
    ax.set_xlabel("agent steps (millions)")
    ax.set_ylabel("mean return (running mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def main():
    pong = study("pong-v4")
    sigma = pong_gaps(pong)
    print(
        f"Pong-v4 forks (sigma {sigma:.1f} from {len(np.concatenate(pong.exact))} "
        "exactly recovered returns)\n"
    )
    print(fork_table(pong.forks))
    for game in ("spaceinvaders-v4", "breakout-v4"):
        s = study(game)
        set_row_gaps(s.forks, s.main_log)
        print(f"\n{game} forks (sigma from row scatter)\n")
        print(fork_table(s.forks, digits=0 if game.startswith("space") else 1))
        for name, fork in s.forks.items():
            if fork["changed"].keys() == {"lr"}:
                print(f"\n{name}, over its window and halves:\n")
                print(branch_table(branch_means(fork, s.main_log)))


if __name__ == "__main__":
    main()
