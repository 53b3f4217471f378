"""Returns, advantages and the A3C loss (chapter 3).

All rollout tensors are time-major, (T, B): T steps of B environments. `dones[t]`
is true when the episode ended at step t; there the return and the advantage are
cut, so nothing leaks from one episode into the next (the seed bootstrapped across
episode ends inside a rollout). Losses are sums over the rollout, as in the seed.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def discounted_returns(rewards, dones, bootstrap, gamma):
    """n-step returns R_t = r_t + gamma * R_{t+1}, cut at episode ends.

    rewards, dones (T, B); bootstrap (B) = V(s_T) -> returns (T, B).

    Book: chapter 3.
    """
    returns = torch.empty_like(rewards)
    running = bootstrap
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running * (~dones[t])
        returns[t] = running
    return returns


def gae(rewards, values, dones, bootstrap, gamma, gae_lambda):
    """Generalised advantage estimates (Schulman et al. 2016), cut at episode ends.

    delta_t = r_t + gamma V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma lambda A_{t+1}.
    rewards, values, dones (T, B); bootstrap (B) -> advantages (T, B).

    Book: chapter 3.
    """
    next_values = torch.cat([values[1:], bootstrap.unsqueeze(0)])  # (T, B)
    deltas = rewards + gamma * next_values * (~dones) - values
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(bootstrap)
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * gae_lambda * running * (~dones[t])
        advantages[t] = running
    return advantages


@dataclass
class LossTerms:
    """The loss and its parts, as plain floats for logging (except `total`).

    Book: chapter 3.
    """

    total: torch.Tensor
    policy: float
    value: float
    entropy: float


def a3c_loss(logits, values, actions, rewards, dones, bootstrap, cfg) -> LossTerms:
    """Policy gradient + value regression - entropy bonus, summed over the rollout.

    logits (T, B, A) and values (T, B) carry gradients; actions (T, B) long;
    rewards (T, B) clipped; dones (T, B) bool; bootstrap (B) = V(s_T), 0 if done.

    Book: chapter 3.
    """
    log_probs = F.log_softmax(logits, dim=-1)  # (T, B, A)
    taken = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (T, B)
    with torch.no_grad():  # targets are constants, as in the seed
        returns = discounted_returns(rewards, dones, bootstrap, cfg.gamma)
        advantages = gae(rewards, values, dones, bootstrap, cfg.gamma, cfg.gae_lambda)
    policy_loss = -(taken * advantages).sum()
    value_loss = 0.5 * (returns - values).pow(2).sum()
    entropy = -(log_probs.exp() * log_probs).sum()
    total = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    return LossTerms(total, policy_loss.item(), value_loss.item(), entropy.item())
