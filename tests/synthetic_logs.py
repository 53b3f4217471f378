"""Trainer logs with known episode returns, for the benchmarks' estimators."""

import numpy as np


def running_log(returns, per_row, horizon=0.99, start=0.0):
    """A log as the trainer writes it: the running mean after every `per_row`
    episodes, one row per 1000 agent steps."""
    means, m = [start], start
    for i, r in enumerate(returns, 1):
        m = horizon * m + (1 - horizon) * r
        if i % per_row == 0:
            means.append(m)
    rows = len(means)
    return {
        "agent_steps": 1000.0 * np.arange(rows),
        "episodes": per_row * np.arange(rows, dtype=float),
        "mean_return": np.array(means),
    }


def curve_of(log) -> list[dict]:
    """The log as a benchmark result's curve, one row a minute."""
    return [
        {"minutes": s / 1000, "agent_steps": s, "episodes": e, "mean_return": m}
        for s, e, m in zip(log["agent_steps"], log["episodes"], log["mean_return"])
    ]
