"""benchmarks/grad_clip.py: gradient norms of real rollouts, summarised, and its
one-line refusals (its numbers are not tested)."""

import json

import torch

from a3c_core.config import A3CConfig
from a3c_core.network import ActorCritic
from benchmarks import grad_clip


def test_the_summary_gives_median_90th_percentile_and_the_share_above_the_clip():
    got = grad_clip.summary([10.0, 50.0, 30.0, 90.0, 20.0], clip=40.0)
    assert got["median"] == 30.0 and got["clipped"] == 0.4 and got["updates"] == 5
    assert 50.0 < got["p90"] <= 90.0


def test_a_model_is_measured_per_games_per_worker_and_written(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(ActorCritic(6).state_dict(), tmp_path / "model.pt")  # Pong: 6 actions
    out = tmp_path / "clip.json"
    args = ["--model", str(tmp_path / "model.pt"), "--games", "1", "2"]
    assert (
        grad_clip.main([*args, "--updates", "3", "--warmup", "1", "--out", str(out)])
        == 0
    )
    record = json.loads(out.read_text())
    assert set(record["games"]) == {"1", "2"} and record["clip"] == 40.0
    for result in record["games"].values():
        assert result["updates"] == 3 and 0 <= result["clipped"] <= 1
        assert 0 < result["median"] <= result["p90"] < float("inf")
    assert "games per worker 2: gradient norm median" in capsys.readouterr().out


def test_bad_input_gets_one_line_and_exit_2_before_any_work(tmp_path, capsys):
    assert grad_clip.main(["--env", "NoSuchGame-v4"]) == 2
    assert grad_clip.main(["--out", str(tmp_path / "missing" / "clip.json")]) == 2
    assert grad_clip.main(["--model", str(tmp_path / "absent.pt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)


def test_norms_are_measured_before_the_clip():
    torch.manual_seed(0)
    cfg = A3CConfig(env_id="Pong-v4", max_grad_norm=1e-6)  # would clip everything
    model = ActorCritic(6).to(memory_format=torch.channels_last)
    norms = grad_clip.grad_norms(model, cfg, games=1, updates=2, warmup=0)
    assert len(norms) == 2 and min(norms) > 1e-3
