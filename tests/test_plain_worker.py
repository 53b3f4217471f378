"""The plain worker: on one game it computes the gradient that the batched worker's
`learn` computes from the same rollout, and it updates the shared model."""

import copy
import multiprocessing as mp
import queue
import threading

import numpy as np
import pytest
import torch

from a3c_core import plain_worker as plain
from a3c_core.config import A3CConfig
from a3c_core.envs import AtariBatch
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from a3c_core.worker import Rollout, SharedCounters, learn


class RecordedGame(AtariBatch):
    """An AtariBatch that keeps what the worker saw and did at every step: the
    observation before it, the action, the clipped reward, the episode end and the
    observation after it."""

    played: list = []

    def step(self, actions):
        before = self.obs.copy()
        rewards, dones, finished = super().step(actions)
        RecordedGame.played.append((before, actions.copy(), rewards, dones, self.obs))
        return rewards, dones, finished


def run_plain_worker(cfg, monkeypatch):
    """One plain worker on a fresh shared model until cfg.total_steps; returns the
    model it started from, the shared model, the counters, the events and the game's
    record."""
    monkeypatch.setattr(plain, "AtariBatch", RecordedGame)
    monkeypatch.setattr(RecordedGame, "played", [])
    torch.manual_seed(0)
    shared_model = ActorCritic(6, cfg.hidden_size).share_memory()
    start = copy.deepcopy(shared_model)
    optimizer = SharedAdam(shared_model.parameters(), lr=cfg.lr)
    counters, events = SharedCounters(mp.get_context("spawn")), queue.Queue()
    stop = threading.Event()
    plain.plain_worker(0, cfg, shared_model, optimizer, counters, events, stop)
    return start, shared_model, counters, list(events.queue), RecordedGame.played


@pytest.mark.parametrize("max_grad_norm", [1e9, 0.01])  # no clipping, and clipping
def test_on_one_game_the_plain_worker_computes_the_gradient_learn_computes(
    max_grad_norm, monkeypatch
):
    # one update of 12 agent steps; episodes cut at 5, so the memory resets inside it
    T = 12
    cfg = A3CConfig(
        rollout_len=T, total_steps=T, max_episode_steps=5, max_grad_norm=max_grad_norm
    )
    start, shared_model, counters, events, played = run_plain_worker(cfg, monkeypatch)
    plain_grads = [p.grad for p in shared_model.parameters()]  # handed over
    assert len(played) == T and counters.steps.value == T
    assert counters.updates.value == 1 and [e.length for e in events] == [5, 5]

    obs, actions, rewards, dones, _ = (np.stack(c) for c in zip(*played))
    frames, dones = torch.from_numpy(obs), torch.from_numpy(dones)  # (T, 1, 1, 80, 80)
    resets = torch.cat([torch.ones(1, 1, dtype=torch.bool), dones[:-1]])  # (T, 1)
    assert dones[:, 0].tolist() == [t % 5 == 4 for t in range(T)]
    with torch.no_grad():  # the bootstrap V(s_T) the plain worker computed
        hx = start.initial_state(1)
        for t in range(T):
            _, _, hx = start(frames[t], hx * ~resets[t].unsqueeze(-1))
        last_obs = torch.from_numpy(played[-1][4])
        bootstrap, _, _ = start(last_obs, hx * ~dones[-1].unsqueeze(-1))

    fast = copy.deepcopy(start).to(memory_format=torch.channels_last)  # as a worker
    activations = fast.activations(frames.flatten(0, 1))  # (T * K, C, H, W) each
    actions, rewards = torch.from_numpy(actions), torch.from_numpy(rewards)
    rollout = Rollout(
        activations, fast.initial_state(1), resets, actions, rewards, dones
    )
    learn(fast, rollout, bootstrap, cfg)
    for p, grad in zip(fast.parameters(), plain_grads):
        torch.testing.assert_close(p.grad, grad, rtol=1e-4, atol=1e-6)


def test_the_plain_worker_loops_until_total_steps_and_steps_the_shared_adam(
    monkeypatch,
):
    cfg = A3CConfig(rollout_len=5, total_steps=5)  # one update
    start, shared_model, counters, _, _ = run_plain_worker(cfg, monkeypatch)
    assert counters.steps.value == 5 and counters.updates.value == 1
    moved = max(
        (new - old).abs().max().item()
        for new, old in zip(shared_model.parameters(), start.parameters())
    )
    assert 0.5 * cfg.lr < moved <= 1.001 * cfg.lr  # Adam's first step: about lr
    cfg = A3CConfig(rollout_len=5, total_steps=12)  # 3 updates reach 12 agent steps
    _, _, counters, _, _ = run_plain_worker(cfg, monkeypatch)
    assert counters.steps.value == 15 and counters.updates.value == 3
