"""Replays the plateau test on a finished run: when would other windows have cut?

The trainer cuts the learning rate (and, with `entropy_plateau_factor`, the entropy
bonus) when `lr_plateau_patience` windows of `lr_plateau_window` agent steps bring no
new best mean return (`a3c_core.optim.Plateau`, chapter 5). One full run measures one
setting in two hours; the curve of a run already made can be replayed through the
same `Plateau` for many settings in a second, up to what the curve keeps:

- the log keeps running means, not returns, so each log row's episodes are replayed
  as the mean of the returns that moved the running mean over that row
  (`forks.row_means`, exact up to rounding) plus Gaussian noise, with several noise
  seeds: the scatter of returns within a row is not kept, so its size is estimated
  from the scatter of neighbouring rows' means (`local_spread`) or given (`--spread`);
- only the curve before the run's own first change of learning rate is replayed:
  after it the run learned at another rate, and a replayed cut later than that says
  nothing.

    python benchmarks/plateau_replay.py pong5-k2-cut-ent-2core \\
        --windows 250000 500000 --patience 1 2 3

prints, per window and patience, the minute of the first replayed cut for each seed,
and the running mean there. A replay, not a run: it tells which settings would cut
during a take-off and which at the top on curves we have, not what the run would
have done after the cut.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from a3c_core.optim import Plateau

if __package__ in (None, ""):  # run as a script: the repository root holds benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.forks import as_columns, row_mask, row_means
from benchmarks.learning_speed import RESULTS, lr_changes

MIN_ROWS = 5  # local_spread needs three rows' means, and the first row gives none


def replayable(curve: list[dict]) -> list[dict]:
    """The rows of a result's curve up to the run's first change of learning rate
    (the row that shows it excluded) that have a running mean."""
    changes = lr_changes(curve)
    end = changes[0]["agent_steps"] if changes else np.inf
    return [r for r in curve if r["agent_steps"] < end and r["mean_return"] is not None]


def local_spread(own, scale, rows: int = 10) -> np.ndarray:
    """Each row's standard deviation of returns, estimated from second differences
    of the rows' means (a steady rise cancels in them; a bend, as at a take-off,
    does not): the median over row j and the `rows` nearest of |own[i-1] - 2 own[i] +
    own[i+1]| / its standard error, / 0.6745 (a normal variable's median absolute
    value in standard deviations)."""
    second = own[:-2] - 2 * own[1:-1] + own[2:]
    z = np.abs(second) / np.sqrt(
        scale[:-2] ** 2 + 4 * scale[1:-1] ** 2 + scale[2:] ** 2
    )
    z = np.concatenate([z[:1], z, z[-1:]])  # the end rows share their neighbour's
    half = rows // 2
    near = [z[max(0, j - half) : j + half + 1] for j in range(len(z))]
    return np.array([np.median(n) for n in near]) / 0.6745


def episodes(rows: list[dict], spread: float | None, seed: int):
    """(agent steps, return) of every episode recovered from the rows (the first
    row's own are not: the running mean before it is not logged), spread evenly over
    each row's agent steps: its row's mean plus normal noise of `spread` (None: each
    row's local_spread), centred so that the row keeps its mean (that mean is already
    a sample: noise added to it would count its sampling noise twice)."""
    rng = np.random.default_rng(seed)
    log = as_columns(rows)
    own, scale, counts = row_means(log, -np.inf, np.inf)
    kept = row_mask(log, -np.inf, np.inf)  # the rows row_means gave, in order
    starts, ends = log["agent_steps"][:-1][kept], log["agent_steps"][1:][kept]
    spreads = local_spread(own, scale) if spread is None else np.full(len(own), spread)
    for mean, sd, count, a, b in zip(own, spreads, counts, starts, ends):
        count = int(round(count))
        noise = rng.normal(size=count)
        noise -= noise.mean()  # the row's mean already has its own sampling noise
        for k in range(count):
            yield int(a + (b - a) * (k + 1) / count), mean + sd * noise[k]


def first_cut(curve, window: int, patience: int, spread, seed) -> dict | None:
    """The row where a Plateau(window, patience) fed the episodes of the curve's
    replayable rows first cuts (the first row at or after its agent step), or None."""
    rows, test = replayable(curve), Plateau(window, patience)
    for steps, ret in episodes(rows, spread, seed):
        if test.stalled(ret, steps):
            return next(r for r in rows if r["agent_steps"] >= steps)
    return None


def replay(result: dict, windows, patiences, spread, seeds: int) -> list[dict]:
    """first_cut for every window, patience and noise seed."""
    curve = result["curve"]
    return [
        {"window": w, "patience": p, "cuts": [first_cut(curve, w, p, spread, s)
                                             for s in range(seeds)]}
        for w in windows for p in patiences
    ]  # fmt: skip


def cut_text(cut: dict | None) -> str:
    if cut is None:
        return "none"
    return f"{cut['minutes']:.0f} min ({cut['mean_return']:.1f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a result in benchmarks/learning_speed/")
    parser.add_argument("--windows", type=int, nargs="+", default=[250_000, 500_000])
    parser.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--spread", type=float, help="returns' std (default: estimated per row)"
    )
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    if min(args.windows) < 1 or min(args.patience) < 1 or args.seeds < 1:
        parser.error("--windows, --patience and --seeds must be >= 1")
    if args.spread is not None and not (0 <= args.spread < np.inf):
        parser.error("--spread must be a finite number >= 0")
    path = RESULTS / f"{args.name}.json"
    if not path.is_file():
        print(
            f"error: no result {path}; see benchmarks/learning_speed/", file=sys.stderr
        )
        return 2
    result = json.loads(path.read_text())
    rows = replayable(result["curve"])
    if len(rows) < MIN_ROWS:
        print(f"error: {args.name} has {len(rows)} log rows before its first change of "
              f"learning rate; a replay needs {MIN_ROWS}", file=sys.stderr)  # fmt: skip
        return 2
    spread = "estimated per row" if args.spread is None else f"{args.spread:g}"
    print(f"{args.name}: replayable to minute {rows[-1]['minutes']:.0f} "
          f"(of {result['minutes']:.0f}); first replayed cut, minute (running mean), "
          f"for {args.seeds} noise seeds, spread {spread}:")  # fmt: skip
    for r in replay(result, args.windows, args.patience, args.spread, args.seeds):
        cuts = ", ".join(cut_text(c) for c in r["cuts"])
        print(f"  window {r['window']:>9,} x patience {r['patience']}: {cuts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
