"""The textbook A3C worker: one game, one step at a time, one graph (chapter 5).

This is the worker of Mnih et al. 2016 as baby-a3c wrote it: play `rollout_len`
agent steps of one game, keeping the autograd graph of every forward pass; then
backpropagate the A3C loss through them, clip the gradient, hand it to the shared
model, step the shared optimizer and copy the shared weights back. It is here to be
read first, and to check the fast worker against: on one game and the same rollout,
`a3c_core.worker.learn` computes the same gradient (tests/test_plain_worker.py).

It is not what the trainer runs. `a3c_core.worker` plays K games per forward pass,
acts without a graph and learns by replaying the rollout, which is several times
faster on a CPU; it also handles what a long run needs (bfloat16 convolutions, a
learning-rate schedule, a stop on a NaN loss), which this worker leaves out.
"""

import torch

from .envs import AtariBatch
from .loss import a3c_loss
from .network import ActorCritic
from .optim import hand_over_grads, pull_params
from .policy import choose_actions
from .worker import EpisodeEnd


def plain_worker(rank, cfg, shared_model, optimizer, counters, events, stop):
    """Train on one game until `cfg.total_steps` agent steps (all workers) or `stop`:
    play a rollout keeping the graph, backpropagate its loss, update the shared model.

    Book: chapter 5.
    """
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    env_seed = cfg.seed + 10_000 * rank
    game = AtariBatch(cfg.env_id, 1, env_seed, cfg.max_episode_steps, cfg.reward_clip)
    model = ActorCritic(shared_model.actor_linear.out_features, cfg.hidden_size)
    pull_params(model, shared_model)
    hx = model.initial_state(1)  # (1, H)
    while not stop.is_set() and counters.steps.value < cfg.total_steps:
        hx, steps = hx.detach(), []  # truncated BPTT: no gradient into the last rollout
        for _ in range(cfg.rollout_len):
            value, logits, hx = model(torch.from_numpy(game.obs), hx)  # (1), (1, A)
            action = choose_actions(logits.detach(), generators=generator)  # (1)
            reward, done, finished = game.step(action.numpy())
            done = torch.from_numpy(done)  # (1) bool
            hx = hx * ~done.unsqueeze(-1)  # a new episode starts with zero memory
            steps.append((value, logits, action, torch.from_numpy(reward), done))
            for score, length in finished:
                events.put(EpisodeEnd(score, length))
        values, logits, actions, rewards, dones = map(torch.stack, zip(*steps))
        with torch.no_grad():  # V(s_T), a constant target (ignored if the game ended)
            bootstrap, _, _ = model(torch.from_numpy(game.obs), hx)  # (1)
        loss = a3c_loss(logits, values, actions, rewards, dones, bootstrap, cfg).total
        model.zero_grad(set_to_none=True)  # fresh gradients every update
        loss.backward()  # through every forward pass of the rollout
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        hand_over_grads(model, shared_model)  # Hogwild: no lock (chapter 4)
        optimizer.step()
        pull_params(model, shared_model)
        counters.add(steps=cfg.rollout_len, updates=1)
    game.close()
