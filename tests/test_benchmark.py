"""The benchmark script must keep working as the worker changes (its numbers are not
tested: they depend on the machine)."""

import dataclasses

from a3c_core.config import A3CConfig
from benchmarks import throughput


def test_breakdown_times_every_part_of_the_worker_loop():
    cfg = dataclasses.replace(A3CConfig(), envs_per_worker=2, rollout_len=5)
    parts = throughput.breakdown(cfg, updates=2)
    assert set(parts) == {
        "acting (forward)",
        "learning (replay, loss, backward)",
        "environment",
        "preprocessing",
        "optimizer step",
        "sync weights",
    }
    assert all(ms > 0 for ms in parts.values())


def test_network_rate_counts_agent_steps():
    rate = throughput.network_rate(A3CConfig(), batch=2, seconds=0.2)
    assert 10 < rate < 1e6
