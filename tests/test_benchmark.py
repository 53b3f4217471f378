"""The benchmark script must keep working as the worker changes (its numbers are not
tested: they depend on the machine)."""

import dataclasses

import pytest
import torch

from a3c_core.config import A3CConfig
from a3c_core.envs import num_actions
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from benchmarks import throughput


@pytest.mark.parametrize("learn_groups, beside", [(1, False), (2, False), (2, True)])
def test_breakdown_times_every_part_of_the_worker_loop(learn_groups, beside):
    cfg = A3CConfig(envs_per_worker=2, rollout_len=5, learn_groups=learn_groups)
    parts = throughput.breakdown(cfg, updates=2, beside=beside)
    assert set(parts) == {
        "acting (forward)",
        "learning (replay, loss, backward)",
        "environment",
        "preprocessing",
        "optimizer step",
        "sync weights",
    }
    assert all(ms > 0 for ms in parts.values())


@pytest.mark.parametrize("loop", ["plain", "fast"])
def test_worker_rate_runs_a_worker_loop_to_its_total_steps(loop):
    from a3c_core.plain_worker import plain_worker
    from a3c_core.worker import run_worker

    cfg = A3CConfig(envs_per_worker=2, rollout_len=5, total_steps=20)
    worker = {"plain": plain_worker, "fast": run_worker}[loop]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a caller with every core: the worker still times one
    try:
        # no timing: tests run beside work
        assert throughput.worker_rate(worker, cfg) > 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="whole rollouts"):  # 25 or 30 steps, not 23
        throughput.worker_rate(worker, dataclasses.replace(cfg, total_steps=23))


def test_network_rate_counts_agent_steps():
    rate = throughput.network_rate(A3CConfig(), batch=2, seconds=0.2)
    assert 10 < rate < 1e6


def test_the_other_worker_trains_the_shared_model_until_stopped():
    cfg = A3CConfig(envs_per_worker=2, rollout_len=5)
    shared = ActorCritic(num_actions(cfg.env_id)).share_memory()
    optimizer = SharedAdam(shared.parameters(), lr=cfg.lr)
    before = [p.detach().clone() for p in shared.parameters()]
    other = throughput.OtherWorker(cfg, shared, optimizer)  # returns after an update
    other.stop()
    assert not other.process.is_alive() and other.process.exitcode == 0
    steps = {float(state["step"]) for state in optimizer.state.values()}
    assert min(steps) >= 1  # Adam stepped every parameter in the shared state
    assert any(not torch.equal(a, b) for a, b in zip(before, shared.parameters()))
