import copy
import dataclasses
import multiprocessing as mp
import queue
import threading

import numpy as np
import pytest
import torch

from a3c_core.config import A3CConfig
from a3c_core.envs import AtariBatch
from a3c_core.loss import a3c_loss
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from a3c_core.worker import (
    EpisodeEnd,
    Rollout,
    SharedCounters,
    UpdateDone,
    channels_last_copy,
    collect,
    learn,
    run_worker,
    split_games,
    update,
)


def test_collect_resets_memory_at_episode_ends_and_reports_episodes():
    torch.manual_seed(0)
    model, events, seen = ActorCritic(6), queue.Queue(), []
    # record the memory each acting step starts from
    model.gru.register_forward_pre_hook(lambda _, args: seen.append(args[1].clone()))
    envs = AtariBatch("Pong-v4", num_envs=2, seed=0, max_episode_steps=4)
    hx, new_episode = torch.rand(2, 256), torch.tensor([False, True])
    generator = torch.Generator().manual_seed(0)
    rollout, hx, new_episode = collect(
        model, envs, hx, new_episode, 10, generator, events
    )
    sizes = [tuple(layer.shape) for layer in rollout.activations]
    assert sizes == [(20, 1, 80, 80)] + [(20, 32, n, n) for n in (40, 20, 10, 5)]
    assert rollout.actions.shape == (10, 2)
    assert not any(layer.requires_grad for layer in rollout.activations)
    assert not hx.requires_grad  # the memory carried on holds no graph
    # env 1 starts an episode at step 0; both end an episode every 4 steps
    ends = rollout.dones.numpy()
    np.testing.assert_array_equal(ends[:, 1], [t % 4 == 3 for t in range(10)])
    for t in range(1, 10):
        for k in range(2):
            assert (seen[t][k].abs().sum() == 0) == bool(ends[t - 1, k])
    assert seen[0][1].abs().sum() == 0 and seen[0][0].abs().sum() > 0
    episodes = [event for event in list(events.queue) if isinstance(event, EpisodeEnd)]
    assert len(episodes) == ends.sum()
    envs.close()
    np.testing.assert_array_equal(rollout.resets[1:].numpy(), ends[:-1])
    assert rollout.resets[0].tolist() == [False, True]


def test_learn_replays_the_acting_pass():
    """The values and logits `learn` differentiates are the ones the worker acted on."""
    torch.manual_seed(0)
    model, events, logits_seen = ActorCritic(6), queue.Queue(), []
    model.actor_linear.register_forward_hook(lambda *a: logits_seen.append(a[2]))
    envs = AtariBatch("Pong-v4", num_envs=3, seed=1, max_episode_steps=5)
    hx, new_episode = torch.rand(3, 256), torch.tensor([True, False, False])
    rollout, _, _ = collect(
        model, envs, hx, new_episode, 8, torch.Generator().manual_seed(0), events
    )
    features = model.replay_features(rollout.activations).reshape(8, 3, 800)
    values, logits = model.unroll(features, rollout.start_hx, rollout.resets)
    torch.testing.assert_close(logits.detach(), torch.stack(logits_seen[:8]))
    assert rollout.resets.any() and values.shape == (8, 3)
    envs.close()


@pytest.mark.parametrize(
    "T,K,channels_last", [(1, 1, True), (4, 3, True), (3, 2, False)]
)
def test_learn_gives_the_gradients_of_backpropagating_through_every_step(
    T, K, channels_last
):
    """The replay (ConvReplay + unroll) changes the cost, not the gradient."""
    torch.manual_seed(0)
    model = ActorCritic(6)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = A3CConfig(max_grad_norm=1e9)  # no clipping: compare raw gradients
    frames, start_hx = torch.rand(T, K, 1, 80, 80), torch.rand(K, 256)
    resets, dones = torch.rand(T, K) < 0.3, torch.rand(T, K) < 0.3
    actions, rewards = torch.randint(6, (T, K)), torch.randn(T, K).clamp(-1, 1)
    bootstrap = torch.randn(K)
    steps, hx = [], start_hx  # the plain way: one graph through every step
    for t in range(T):
        v, lg, hx = model(frames[t], hx * ~resets[t].unsqueeze(-1))
        steps.append((v, lg))
    values, logits = (torch.stack(c) for c in zip(*steps))
    a3c_loss(logits, values, actions, rewards, dones, bootstrap, cfg).total.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    layers = [torch.cat(c) for c in zip(*(model.activations(f) for f in frames))]
    rollout = Rollout(layers, start_hx, resets, actions, rewards, dones)
    learn(model, rollout, bootstrap, cfg)
    for p, grad in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, grad, rtol=1e-4, atol=1e-5)


def test_a_bfloat16_worker_collects_and_learns_gradients_close_to_float32():
    """conv_dtype=bfloat16: the rollout keeps bfloat16 activations, the GRU and heads
    stay float32, and every gradient is within a few percent of float32's."""
    torch.manual_seed(0)
    model, events = ActorCritic(6, conv_dtype=torch.bfloat16), queue.Queue()
    envs = AtariBatch("Pong-v4", num_envs=3, seed=1, max_episode_steps=50)
    hx, new_episode = torch.zeros(3, 256), torch.ones(3, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    rollout, _, _ = collect(model, envs, hx, new_episode, 6, generator, events)
    envs.close()
    assert all(layer.dtype == torch.bfloat16 for layer in rollout.activations)
    cfg, bootstrap = A3CConfig(max_grad_norm=1e9), torch.zeros(3)
    learn(model, rollout, bootstrap, cfg)
    grads = [p.grad.clone() for p in model.parameters()]
    model.conv_dtype = torch.float32
    frames = rollout.activations[0].float()
    rollout.activations = model.activations(frames)
    learn(model, rollout, bootstrap, cfg)
    for p, grad in zip(model.parameters(), grads):
        assert grad.dtype == torch.float32
        assert (grad - p.grad).norm() <= 0.05 * p.grad.norm() + 1e-6


def test_the_worker_learns_with_the_entropy_bonus_the_plateau_cuts_left():
    """Two cuts so far, each halving the bonus: the worker's loss is policy + 0.5 *
    value - 0.01 / 4 * entropy, and without cuts - 0.01 * entropy."""
    cfg = A3CConfig(env_id="Pong-v4", envs_per_worker=2, rollout_len=5,
                    total_steps=10, lr_plateau_cuts=2,
                    entropy_plateau_factor=0.5)  # fmt: skip
    shared = ActorCritic(6).share_memory()
    optimizer = SharedAdam(shared.parameters(), lr=cfg.lr)
    for cuts, bonus in ((0, 0.01), (2, 0.0025)):
        counters = SharedCounters(mp.get_context("spawn"), lr_cuts=cuts)
        events = queue.Queue()
        run_worker(0, cfg, shared, optimizer, counters, events, threading.Event())
        done = [e for e in list(events.queue) if isinstance(e, UpdateDone)]
        assert len(done) == 1  # 2 games x 5 steps: one update reaches total_steps
        d = done[0]
        expected = d.policy_loss + 0.5 * d.value_loss - bonus * d.entropy
        assert d.loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert d.entropy > 1.0  # a bonus that matters: the policy is still uncertain


def test_learn_groups_make_one_update_per_group_from_the_acting_weights():
    """learn_groups=2 on 4 games: two shared Adam steps, each with the gradient of
    its two games at the weights the worker acted with, as if two workers had
    acted with the same weights and each learned from its own games."""
    torch.manual_seed(0)
    T, K = 3, 4
    cfg = A3CConfig(envs_per_worker=K, learn_groups=2)
    acting = ActorCritic(6).to(memory_format=torch.channels_last)
    frames, start_hx = torch.rand(T, K, 1, 80, 80), torch.rand(K, 256)
    resets, dones = torch.rand(T, K) < 0.3, torch.rand(T, K) < 0.3
    actions, rewards = torch.randint(6, (T, K)), torch.randn(T, K).clamp(-1, 1)
    bootstrap = torch.randn(K)

    def rollout_of(games):  # acted on these games alone
        layers = [torch.cat(c) for c in zip(*map(acting.activations, frames[:, games]))]
        columns = (c[:, games] for c in (resets, actions, rewards, dones))
        return Rollout(layers, start_hx[games], *columns)

    expected = copy.deepcopy(acting)
    optimizer = SharedAdam(expected.parameters(), lr=cfg.lr)
    for games in (slice(0, 2), slice(2, 4)):
        local = copy.deepcopy(acting)
        learn(local, rollout_of(games), bootstrap[games], cfg)
        for p, q in zip(local.parameters(), expected.parameters()):
            q.grad = p.grad
        optimizer.step()

    parts = split_games(rollout_of(slice(0, K)), bootstrap, 2)
    for (part, values), games in zip(parts, (slice(0, 2), slice(2, 4))):
        for got, want in zip(part.activations, rollout_of(games).activations):
            assert got.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(values, bootstrap[games])
    model, shared = copy.deepcopy(acting), copy.deepcopy(acting).share_memory()
    optimizer = SharedAdam(shared.parameters(), lr=cfg.lr)
    counters = SharedCounters(mp.get_context("spawn"))
    rollout = rollout_of(slice(0, K))
    terms = update(model, shared, optimizer, rollout, bootstrap, cfg, counters)
    assert len(terms) == 2
    assert (counters.steps.value, counters.updates.value) == (T * K, 2)
    per_update = dataclasses.replace(cfg, rollout_len=T).agent_steps_per_update
    assert per_update * 2 == T * K  # what the trainer's log divides the losses by
    for p, q, r in zip(shared.parameters(), expected.parameters(), model.parameters()):
        torch.testing.assert_close(p, q)
        assert torch.equal(p, r)  # the worker goes on with the new shared weights
    moved = [
        not torch.equal(p, a) for p, a in zip(shared.parameters(), acting.parameters())
    ]
    assert all(moved)  # both groups' steps reached every parameter


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_a_group_of_games_is_copied_into_channels_last_with_its_values(dtype):
    frames = torch.arange(3 * 4 * 2 * 5 * 5).reshape(3 * 4, 2, 5, 5).to(dtype)
    x = frames.contiguous(memory_format=torch.channels_last).unflatten(0, (3, 4))
    out = channels_last_copy(x[:, 1:3])  # games 1 and 2 of 4, 3 steps
    assert out.dtype == dtype and out.shape == (6, 2, 5, 5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, frames.unflatten(0, (3, 4))[:, 1:3].flatten(0, 1))
