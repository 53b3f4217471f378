"""The benchmark script must keep working as the worker changes (its numbers are not
tested: they depend on the machine)."""

import pytest

from a3c_core.config import A3CConfig
from benchmarks import throughput


@pytest.mark.parametrize("learn_groups", [1, 2])
def test_breakdown_times_every_part_of_the_worker_loop(learn_groups):
    cfg = A3CConfig(envs_per_worker=2, rollout_len=5, learn_groups=learn_groups)
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
