import multiprocessing as mp

import pytest
import torch

from a3c_core.config import A3CConfig
from a3c_core.loss import a3c_loss
from a3c_core.network import ActorCritic
from a3c_core.optim import (
    Plateau,
    SharedAdam,
    hand_over_grads,
    pull_params,
    scheduled_bonus,
    scheduled_lr,
    set_lr,
)
from a3c_core.worker import Rollout, SharedCounters, learn


def test_all_optimizer_state_lives_in_shared_memory():
    model = ActorCritic(6).share_memory()
    optimizer = SharedAdam(model.parameters(), lr=1e-3)
    for state in optimizer.state.values():
        assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
        assert all(t.is_shared() for t in state.values())


def test_shared_adam_follows_torch_adam_step_for_step():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours, reference = (
        SharedAdam(a.parameters(), lr=0.1),
        torch.optim.Adam(b.parameters(), lr=0.1),
    )
    for _ in range(5):
        x = torch.randn(4, 5)
        for model, opt in ((a, ours), (b, reference)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(
            p, q
        )  # needs the bias correction of a real step count
    assert all(s["step"].item() == 5 for s in ours.state.values())


def _step_in_child(model, optimizer):
    model.zero_grad()
    model(torch.ones(1, 5)).sum().backward()
    optimizer.step()


def test_a_step_in_another_process_updates_the_shared_state_and_weights():
    model = torch.nn.Linear(5, 3).share_memory()
    optimizer = SharedAdam(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    child = mp.get_context("spawn").Process(
        target=_step_in_child, args=(model, optimizer)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert all(s["step"].item() == 1 for s in optimizer.state.values())
    assert not torch.equal(model.weight, before)


FRAMES = torch.rand(2, 1, 80, 80, generator=torch.Generator().manual_seed(0))


def fixed_rollout(model: ActorCritic) -> Rollout:
    """One step of 2 games, as `collect` stores it."""
    return Rollout(
        model.activations(FRAMES),
        model.initial_state(2),
        torch.tensor([[True, True]]),  # both games start an episode
        torch.tensor([[1, 2]]),
        torch.tensor([[1.0, -1.0]]),
        torch.tensor([[False, True]]),
    )


def update_twice(seed_style: bool):
    """Two identical updates through a shared SGD optimizer; returns both changes."""
    torch.manual_seed(0)
    shared, local = ActorCritic(6).share_memory(), ActorCritic(6)
    optimizer = torch.optim.SGD(shared.parameters(), lr=0.01)
    start = [p.detach().clone() for p in shared.parameters()]
    changes = []
    for _ in range(2):
        with torch.no_grad():
            for p, s in zip(shared.parameters(), start):
                p.copy_(s)
        pull_params(local, shared)
        rollout, cfg = fixed_rollout(local), A3CConfig(max_grad_norm=1e9)
        if seed_style:  # baby-a3c: link the grads once, then shared.zero_grad()
            optimizer.zero_grad()  # torch >= 2.0: sets shared grads to None
            r = rollout
            values, logits, _ = local(FRAMES, local.initial_state(2))
            loss = a3c_loss(
                logits[None], values[None], r.actions, r.rewards, r.dones,
                torch.zeros(2), cfg,
            )  # fmt: skip
            loss.total.backward()
            for lp, sp in zip(local.parameters(), shared.parameters()):
                if sp.grad is None:
                    sp._grad = lp.grad
        else:
            learn(local, rollout, torch.zeros(2), cfg)
            hand_over_grads(local, shared)
        optimizer.step()
        changes.append(shared.conv1.weight.detach() - start[0])
    return changes


def test_two_identical_updates_give_identical_parameter_changes():
    first, second = update_twice(seed_style=False)
    torch.testing.assert_close(first, second)


def test_the_seed_hand_off_accumulates_local_grads_on_modern_torch():
    first, second = update_twice(seed_style=True)
    torch.testing.assert_close(second, 2 * first)  # the bug our hand-off fixes


def _count(counters, n):
    for _ in range(n):
        counters.add(steps=1, updates=1)


def test_shared_step_counter_is_exact_under_concurrent_updates():
    ctx = mp.get_context("spawn")
    counters = SharedCounters(ctx)
    workers = [ctx.Process(target=_count, args=(counters, 20_000)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert counters.steps.value == 40_000 and counters.updates.value == 40_000


def test_scheduled_lr_is_constant_by_default_and_falls_linearly_to_zero():
    assert scheduled_lr(A3CConfig(lr=1e-3), 10**9) == 1e-3
    cfg = A3CConfig(lr=1e-3, lr_decay_steps=1000)
    lrs = [scheduled_lr(cfg, s) for s in (0, 250, 500, 1000, 5000)]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 0.0, 0.0])
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    set_lr(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25]


def test_each_plateau_cut_multiplies_the_lr_up_to_the_allowed_cuts():
    cfg = A3CConfig(lr=1e-3, lr_plateau_cuts=2, lr_plateau_factor=0.5)
    lrs = [scheduled_lr(cfg, 0, cuts) for cuts in (0, 1, 2, 3)]
    assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4, 2.5e-4])
    assert scheduled_lr(A3CConfig(lr=1e-3), 0, cuts=3) == 1e-3  # cuts switched off
    decaying = A3CConfig(lr=1e-3, lr_decay_steps=1000, lr_plateau_cuts=1)
    assert scheduled_lr(decaying, 500, cuts=1) == pytest.approx(1.25e-4)


def test_each_plateau_cut_multiplies_the_entropy_bonus_if_asked():
    cfg = A3CConfig(entropy_coef=0.01, lr_plateau_cuts=2, entropy_plateau_factor=0.25)
    bonuses = [scheduled_bonus(cfg, cuts).entropy_coef for cuts in (0, 1, 2, 3)]
    assert bonuses == pytest.approx([0.01, 2.5e-3, 6.25e-4, 6.25e-4])
    assert scheduled_bonus(cfg, 1).lr == cfg.lr  # only the bonus changes
    assert scheduled_bonus(A3CConfig(lr_plateau_cuts=2), 2) == A3CConfig(
        lr_plateau_cuts=2
    )  # the default factor 1 keeps the bonus through cuts
    off = A3CConfig(lr_plateau_cuts=0, entropy_plateau_factor=0.25)
    assert scheduled_bonus(off, 3) == off  # cuts switched off


def feed(plateau: Plateau, window_means: list[float]) -> list[int]:
    """Two episodes (mean +- 1) in each window of 10 agent steps; the windows that
    end a plateau (a window is judged when the first episode after it ends)."""
    ends = []
    for i, mean in enumerate([*window_means, 0.0]):
        if plateau.stalled(mean - 1.0, 10 * i) and i > 0:
            ends.append(i - 1)
        assert not plateau.stalled(mean + 1.0, 10 * i + 5)  # inside the window
    return ends


def test_a_rising_score_is_no_plateau_however_slowly_it_rises():
    slow = [-21 + 0.01 * i for i in range(50)]
    assert feed(Plateau(window=10, patience=2), slow) == []
    assert feed(Plateau(window=10, patience=2), [300 + 50 * i for i in range(50)]) == []


def test_patience_windows_without_a_new_best_are_a_plateau_then_the_test_restarts():
    # best 15 at window 2; windows 3, 4 and 5 are no better: patience 3 ends at 5
    means = [10, 14, 15, 14.5, 15, 13, 16, 17, 17, 16, 16.5, 18]
    assert feed(Plateau(window=10, patience=3), means[:10]) == [5]
    # after the cut the best is forgotten: 16 is progress again, and 17 at window 7
    # is not beaten by windows 8, 9, 10: the next plateau ends at 10
    assert feed(Plateau(window=10, patience=3), means) == [5, 10]
    flat = [5.0] * 8
    assert feed(Plateau(window=10, patience=3), flat) == []  # it never learned


def test_no_plateau_before_the_score_rises_a_std_above_the_first_window():
    # first window: -1 and +1 (mean 0, std 1); 0.9 is not yet learning, 1.5 is
    plateau = Plateau(window=10, patience=2)
    assert feed(plateau, [0, 0.9, 0.5, 0.8, 0.2, 0.9, 0.1]) == []
    assert feed(Plateau(window=10, patience=2), [0, 0.9, 0.5, 1.5, 1.2, 1.4]) == [5]


def test_a_window_is_agent_steps_whatever_the_number_of_episodes_in_it():
    plateau = Plateau(window=100, patience=1)
    for step in range(0, 100, 2):  # 50 short episodes, mean 0: the floor
        assert not plateau.stalled(0.0, step)
    assert not plateau.stalled(2.0, 100)  # closes the first window, opens the next
    for step in range(102, 200, 2):  # 50 more, mean 2: the best
        assert not plateau.stalled(2.0, step)
    assert not plateau.stalled(0.0, 200)  # closes window 2: a new best, 2
    assert not plateau.stalled(1.0, 299)  # one long episode in the third window
    assert plateau.stalled(9.0, 300)  # closes it: mean 0.5 after a best of 2
    assert (plateau.total, plateau.count, plateau.start) == (9.0, 1, 300)  # window 4


def test_a_plateau_rebuilt_from_its_state_goes_on_as_if_never_stopped():
    means = [10, 14, 15, 14.5, 15, 13, 16, 17, 17, 16, 16.5, 18]
    episodes = [
        (m + d, 10 * i + 5 * (d > 0)) for i, m in enumerate(means) for d in (-1, 1)
    ]
    whole = Plateau(window=10, patience=3)
    expected = [whole.stalled(*episode) for episode in episodes]
    assert sum(expected) == 2
    for stop in range(len(episodes)):  # saved after any episode, then rebuilt
        first = Plateau(window=10, patience=3)
        before = [first.stalled(*episode) for episode in episodes[:stop]]
        resumed = Plateau(10, 3, **first.state())
        after = [resumed.stalled(*episode) for episode in episodes[stop:]]
        assert before + after == expected and resumed.state() == whole.state()
