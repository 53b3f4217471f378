"""benchmarks/adam_eps.py: Adam's denominators read from a training checkpoint, the
share of steps an eps would shorten, and its one-line refusals."""

import dataclasses
import json

import pytest
import torch

from a3c_core.checkpoint import save_checkpoint, training_state
from a3c_core.config import A3CConfig
from a3c_core.network import ActorCritic
from a3c_core.optim import SharedAdam
from a3c_core.runs import Progress
from benchmarks import adam_eps


def saved_run(run_dir, roots=(1e-4, 3e-4), step=1e6, **config) -> None:
    """A run folder whose Adam state has sqrt(v) spread evenly over `roots` in each
    weight but the critic's bias (a root of 1), after `step` updates."""
    run_dir.mkdir()
    cfg = A3CConfig(**config)
    model = ActorCritic(6, cfg.hidden_size)
    optimizer = SharedAdam(model.parameters(), lr=cfg.lr)
    for p in model.parameters():
        state = optimizer.state[p]
        spread = torch.linspace(*roots, p.numel()).reshape(p.shape) ** 2
        state["exp_avg_sq"].copy_(spread)
        state["step"].fill_(step)
    optimizer.state[model.critic_linear.bias]["exp_avg_sq"].fill_(1.0)
    progress = dataclasses.asdict(Progress(agent_steps=1000))
    save_checkpoint(run_dir, training_state(model, optimizer, cfg, progress))


def test_eps_shortens_the_steps_whose_root_is_below_nine_eps():
    roots = {"a": torch.tensor([1e-9, 1e-7, 1e-3, 9.5e-8]), "b": torch.tensor([8.9e-8])}
    assert adam_eps.shortened(roots, 1e-8) == pytest.approx(0.4)  # 1e-9 and 8.9e-8
    assert adam_eps.shortened(roots, 1e-10) == 0.0
    assert adam_eps.shortened(roots, 1.0) == 1.0


def test_a_run_is_read_for_the_summed_loss_and_its_mean(tmp_path, capsys):
    saved_run(tmp_path / "run", envs_per_worker=4, learn_groups=2)
    out = tmp_path / "eps.json"
    args = [str(tmp_path / "run"), "--eps", "1e-8", "2e-6", "--out", str(out)]
    assert adam_eps.main(args) == 0
    (reading,) = json.loads(out.read_text())["runs"]
    assert reading["samples_per_update"] == 40  # 20 steps x 4 games / 2 groups
    conv1, critic_bias = (
        reading["layers"][n] for n in ("conv1.weight", "critic_linear.bias")
    )
    assert conv1 == {
        "min": pytest.approx(1e-4),
        "median": pytest.approx(2e-4, rel=0.01),
    }
    assert critic_bias["min"] == 1.0
    assert reading["shortened_sum"] == {"1e-08": 0.0, "2e-06": 0.0}
    # as a mean over 40 samples, eps 2e-6 acts as 8e-5: roots below 7.2e-4, all but one
    assert reading["shortened_mean"]["1e-08"] == 0.0
    assert 0.999 < reading["shortened_mean"]["2e-06"] < 1.0
    printed = capsys.readouterr().out
    assert (
        "eps 2e-06: steps shortened" in printed
        and "(as eps 8e-05 on the sum)" in printed
    )


def test_the_roots_are_corrected_for_adams_start_at_zero(tmp_path):
    saved_run(tmp_path / "early", step=1)  # v / (1 - 0.999): sqrt(1000) times larger
    _, roots = adam_eps.denominators(tmp_path / "early")
    assert roots["conv1.weight"].min().item() == pytest.approx(1e-4 * 1000**0.5)


def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys):
    saved_run(tmp_path / "run")
    damaged = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    damaged["optimizer"]["state"].pop(3)
    torch.save(damaged, tmp_path / "run" / "checkpoint.pt")
    assert adam_eps.main([str(tmp_path / "absent")]) == 2
    assert adam_eps.main([str(tmp_path / "run")]) == 2  # no Adam state for a weight
    assert adam_eps.main([str(tmp_path), "--out", str(tmp_path / "no" / "a.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "no run folder" in lines[0] and "no Adam state that fits" in lines[1]
