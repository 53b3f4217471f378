"""benchmarks/forks.py: its estimators on logs with known answers, and what the
Experiments appendix says about the committed forks."""

import math

import numpy as np
import pytest

from benchmarks import forks

from synthetic_logs import curve_of, running_log


def test_own_mean_recovers_the_weighted_mean_of_the_new_episodes():
    rng = np.random.default_rng(0)
    returns = rng.normal(10, 3, size=50)
    log = running_log(returns, per_row=50, start=-20.0)
    weights = 0.99 ** np.arange(49, -1, -1)  # the newest episode weighs most
    expected = (weights * returns).sum() / weights.sum()
    got = forks.own_mean(log["mean_return"][0], log["mean_return"][1], 50)
    assert math.isclose(got, expected, rel_tol=1e-9)


def test_span_means_are_the_episode_means_between_two_times_of_a_curve():
    returns = [-20.0] * 60 + [10.0] * 60  # two episodes per row, one row per minute
    log = running_log(returns, per_row=2)
    curve = curve_of(log)
    curve.insert(0, {**curve[0], "mean_return": None})  # a row before any episode
    spans = ((0, 30), (30, 60), (15, 45))
    assert forks.span_means(curve, spans) == pytest.approx([-20, 10, -5])


def test_own_stderr_of_one_episode_is_one_and_shrinks_like_one_over_root_n():
    assert forks.own_stderr(1) == 1
    assert math.isclose(forks.own_stderr(20), 1 / math.sqrt(20), rel_tol=0.1)
    assert forks.own_stderr(1000) > 1 / math.sqrt(1000)  # old episodes weigh less


def test_single_returns_recovers_every_return_of_a_row_with_one_episode():
    returns = np.array([3.0, -1.0, 7.0, 2.0])
    log = running_log(returns, per_row=1)
    np.testing.assert_allclose(forks.single_returns(log, 0, 4000), returns)


def test_row_scatter_estimates_the_episode_standard_deviation():
    rng = np.random.default_rng(1)
    log = running_log(rng.normal(0, 5, size=20_000), per_row=10, start=0.0)
    sigma = forks.pooled_std([forks.row_scatter(log, 100_000, 2_000_000)])
    assert 4.5 < sigma < 5.5


def test_the_rule_needs_the_whole_window_above_two_se_and_both_halves_ahead():
    assert forks.passes_rule([2.1, 0.1, 0.1])
    assert not forks.passes_rule([1.9, 3.0, 3.0])
    assert not forks.passes_rule([5.0, 6.0, -0.1])


@pytest.fixture(scope="module")
def pong():
    s = forks.study("pong-v4")
    return s, forks.pong_gaps(s)


def test_every_pong_fork_changes_one_setting_from_the_main_runs_config(pong):
    s, sigma = pong
    assert len(s.forks) == 8
    assert 3 < sigma < 3.5  # one episode's standard deviation, exact returns
    changed = {name: fork["changed"] for name, fork in s.forks.items()}
    assert changed["lr-1e-3"] == {"lr": (5e-4, 1e-3)}
    assert changed["lr-2.5e-4"] == {"lr": (5e-4, 2.5e-4)}
    assert changed["lr-1.25e-4"] == {"lr": (5e-4, 1.25e-4)}
    assert changed["lr-3.125e-5"] == {"lr": (1.25e-4, 3.125e-5)}
    assert changed["ent-0.005"] == {"entropy_coef": (0.01, 0.005)}
    assert changed["envs-per-worker-4"] == {"envs_per_worker": (8, 4)}
    seed = {k: new for k, (_, new) in changed["seed-preset"].items()}
    assert seed == {"num_workers": 20, "envs_per_worker": 1, "lr": 1e-4}


def test_what_the_appendix_says_about_the_pong_forks(pong):
    f = pong[0].forks
    assert f["lr-1e-3"]["gap"] < -3  # twice the lr: worse, far beyond noise
    assert f["max-grad-norm-320"]["gap"] < -2
    assert f["seed-preset"]["gap"] > 2  # the seed's setup: more per agent step
    assert f["lr-1.25e-4"]["gap"] > 2  # a quarter of the lr at the plateau
    for name in ("lr-2.5e-4", "ent-0.005", "lr-3.125e-5", "envs-per-worker-4"):
        assert abs(f[name]["gap"]) < 2, name  # no measurable difference


def test_row_scatter_errs_high_against_the_exact_returns_on_pong(pong):
    s, sigma = pong
    exact = [
        fork
        for fork in s.forks.values()
        if any(
            len(forks.single_returns(run, fork["start"], fork["end"]))
            for run in (fork["log"], s.main_log)
        )
    ]
    scatter = [z for fork in exact for z in forks.window_scatter(fork, s.main_log)]
    assert forks.pooled_std(scatter) > sigma


def test_the_learning_rate_tests_and_their_decisions():
    si = forks.study("spaceinvaders-v4")
    bo = forks.study("breakout-v4")
    pong = forks.study("pong-v4")
    # The quarter step was adopted on SpaceInvaders and Breakout: the forks kept
    # there are the branches left behind at lr 5e-4, so the lead is minus their gap.
    for s in (si, bo):
        kept = s.forks["lr-5e-4"]
        assert kept["changed"] == {"lr": (1.25e-4, 5e-4)}
        assert forks.adopted(s, "lr-5e-4")
        leads = [-r.gap for r in forks.branch_means(kept, s.main_log).values()]
        assert forks.passes_rule(leads)
    # A second quarter step on SpaceInvaders, 4 games per worker on Pong: ahead by
    # less than the rule, not adopted.
    for s, name in ((si, "lr-3.125e-5"), (pong, "envs-per-worker-4")):
        leads = [r.gap for r in forks.branch_means(s.forks[name], s.main_log).values()]
        assert not forks.passes_rule(leads) and not forks.adopted(s, name)
    # The seed's setup on SpaceInvaders, one core each: not better per agent step.
    forks.set_row_gaps(si.forks, si.main_log)
    assert si.forks["seed-preset"]["gap"] < 0
