import numpy as np
import torch
import torch.nn.functional as F

from a3c_core.config import A3CConfig
from a3c_core.loss import a3c_loss, discounted_returns, gae


def discount(x, gamma):
    """baby-a3c's `lfilter([1], [1, -gamma], x[::-1])[::-1]`, as a plain loop."""
    out, running = np.zeros(len(x)), 0.0
    for t in reversed(range(len(x))):
        running = x[t] + gamma * running
        out[t] = running
    return out


def seed_cost(values, logits, actions, rewards, gamma=0.99, tau=1.0):
    """baby-a3c's cost_func for one environment; values has T + 1 entries."""
    logps = F.log_softmax(logits, dim=-1)
    np_values = values.detach().numpy()
    delta_t = rewards + gamma * np_values[1:] - np_values[:-1]
    gen_adv_est = torch.tensor(
        discount(delta_t, gamma * tau).copy(), dtype=torch.float32
    )
    policy_loss = -(logps.gather(1, actions.view(-1, 1)).view(-1) * gen_adv_est).sum()
    rewards = rewards.copy()
    rewards[-1] += gamma * np_values[-1]
    returns = torch.tensor(discount(rewards, gamma).copy(), dtype=torch.float32)
    value_loss = 0.5 * (returns - values[:-1]).pow(2).sum()
    entropy_loss = (-logps * torch.exp(logps)).sum()
    return policy_loss + 0.5 * value_loss - 0.01 * entropy_loss


def random_rollout(T=7, B=3, A=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        logits=torch.randn(T, B, A, generator=g),
        values=torch.randn(T, B, generator=g),
        actions=torch.randint(0, A, (T, B), generator=g),
        rewards=torch.randint(-1, 2, (T, B), generator=g).float(),
        bootstrap=torch.randn(B, generator=g),
    )


def test_loss_equals_baby_a3c_cost_when_no_episode_ends():
    r = random_rollout(B=1)
    dones = torch.zeros(7, 1, dtype=torch.bool)
    ours = a3c_loss(
        r["logits"],
        r["values"],
        r["actions"],
        r["rewards"],
        dones,
        r["bootstrap"],
        A3CConfig(),
    )
    values = torch.cat([r["values"][:, 0], r["bootstrap"]])
    theirs = seed_cost(
        values, r["logits"][:, 0], r["actions"][:, 0], r["rewards"][:, 0].numpy()
    )
    torch.testing.assert_close(ours.total, theirs)


def test_returns_match_a_plain_loop_per_environment():
    r = random_rollout()
    dones = torch.zeros(7, 3, dtype=torch.bool)
    returns = discounted_returns(r["rewards"], dones, r["bootstrap"], 0.9)
    for b in range(3):
        rewards = r["rewards"][:, b].numpy().astype(float)
        rewards[-1] += 0.9 * r["bootstrap"][b].item()
        np.testing.assert_allclose(returns[:, b], discount(rewards, 0.9), rtol=1e-5)


def test_gae_with_lambda_one_equals_returns_minus_values():
    r = random_rollout()
    dones = torch.rand(7, 3, generator=torch.Generator().manual_seed(1)) < 0.2
    returns = discounted_returns(r["rewards"], dones, r["bootstrap"], 0.99)
    advantages = gae(r["rewards"], r["values"], dones, r["bootstrap"], 0.99, 1.0)
    torch.testing.assert_close(advantages, returns - r["values"])


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    r = random_rollout()
    dones = torch.zeros(7, 3, dtype=torch.bool)
    advantages = gae(r["rewards"], r["values"], dones, r["bootstrap"], 0.99, 0.0)
    next_values = torch.cat([r["values"][1:], r["bootstrap"][None]])
    torch.testing.assert_close(
        advantages, r["rewards"] + 0.99 * next_values - r["values"]
    )


def test_nothing_is_bootstrapped_across_an_episode_end():
    rewards = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    dones = torch.tensor([[False], [True], [False], [False]])
    values = torch.full((4, 1), 10.0)
    bootstrap = torch.tensor([100.0])
    returns = discounted_returns(rewards, dones, bootstrap, 0.5)
    # the episode ends at t=1: its returns see only its own reward
    torch.testing.assert_close(returns[:2, 0], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(returns[2:, 0], torch.tensor([25.0, 50.0]))
    advantages = gae(rewards, values, dones, bootstrap, 0.5, 1.0)
    torch.testing.assert_close(advantages[1, 0], torch.tensor(1.0 - 10.0))


def test_entropy_bonus_lowers_the_loss_of_uncertain_policies():
    r = random_rollout()
    dones = torch.zeros(7, 3, dtype=torch.bool)
    cfg = A3CConfig()
    uniform = a3c_loss(
        torch.zeros_like(r["logits"]),
        r["values"],
        r["actions"],
        r["rewards"],
        dones,
        r["bootstrap"],
        cfg,
    )
    assert np.isclose(uniform.entropy, 7 * 3 * np.log(4), rtol=1e-5)
    # total = policy + 0.5 * value - 0.01 * entropy, with value = 0.5 * sum of squares
    expected = uniform.policy + 0.5 * uniform.value - 0.01 * uniform.entropy
    assert np.isclose(uniform.total.item(), expected, rtol=1e-5)
