"""The benchmark script must keep working as the worker changes (its numbers are not
tested: they depend on the machine)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from a3c_core.config import A3CConfig

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_breakdown_times_every_part_of_the_worker_loop(throughput):
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


def test_network_rate_counts_agent_steps(throughput):
    rate = throughput.network_rate(A3CConfig(), batch=2, seconds=0.2)
    assert 10 < rate < 1e6
