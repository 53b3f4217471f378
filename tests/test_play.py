import json

import pytest
import torch

from a3c_core.checkpoint import CheckpointError, load_agent
from a3c_core.config import A3CConfig
from a3c_core.network import ActorCritic
from a3c_core.play import (
    evaluate,
    evaluate_parallel,
    play_episode,
    save_gif,
    summarize,
)
from tests.conftest import baby_a3c_checkpoint


def test_original_pong_agent_wins_with_our_preprocessing_and_network():
    """Fidelity: baby-a3c's own Pong weights play well only if we see what it saw."""
    model = load_agent("Pong-v4", baby_a3c_checkpoint("pong-v4", 80))
    results = evaluate(model, "Pong-v4", episodes=5, seed=0, num_envs=5)
    summary = summarize(results)
    assert summary["mean"] >= 17, summary


def test_evaluation_is_reproducible_and_ordered():
    torch.manual_seed(0)
    model = ActorCritic(4).eval()
    a = evaluate(model, "Breakout-v4", episodes=3, seed=5, num_envs=2)
    b = evaluate(model, "Breakout-v4", episodes=3, seed=5, num_envs=2)
    assert a == b and len(a) == 3 and all(length > 0 for _, length in a)


def test_evaluation_episode_i_is_the_game_play_episode_plays_with_seed_plus_i():
    torch.manual_seed(0)
    model = ActorCritic(4).eval()
    one_by_one = evaluate(model, "Breakout-v4", episodes=3, seed=5, num_envs=1)
    batched = evaluate(model, "Breakout-v4", episodes=3, seed=5, num_envs=3)
    assert one_by_one == batched
    episode = play_episode(model, "Breakout-v4", seed=6)
    assert (episode.score, episode.length) == batched[1]
    in_two_processes = evaluate_parallel(
        model, "Breakout-v4", episodes=3, seed=5, processes=2
    )
    assert in_two_processes == batched


def test_play_episode_records_what_the_agent_saw_thought_and_got(tmp_path):
    torch.manual_seed(0)
    model = ActorCritic(4).eval()
    episode = play_episode(model, "Breakout-v4", seed=0, record=True)
    assert (
        len(episode.frames)
        == len(episode.values)
        == len(episode.probs)
        == len(episode.rewards)
        == episode.length
    )
    assert abs(episode.probs[0].sum() - 1) < 1e-5
    assert episode.score > 0  # so that the rewards below are not all zero
    assert sum(episode.rewards) == episode.score
    assert play_episode(model, "Breakout-v4", seed=0, max_steps=5).rewards == []
    gif = save_gif(episode.frames[:40], tmp_path / "play.gif")
    assert gif.stat().st_size > 1000


def test_summary_numbers():
    s = summarize([(1.0, 10), (3.0, 30)])
    assert (s["mean"], s["std"], s["min"], s["max"], s["mean_length"]) == (
        2,
        1,
        1,
        3,
        20,
    )


def test_agent_for_another_game_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="4 actions.*Pong-v4 has 6"):
        load_agent("Pong-v4", baby_a3c_checkpoint("breakout-v4"))
    torch.save(ActorCritic(6).state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(
        A3CConfig(env_id="SpaceInvaders-v4").to_json()
    )
    with pytest.raises(CheckpointError, match="for SpaceInvaders-v4, not Pong-v4"):
        load_agent("Pong-v4", tmp_path)


def test_eval_json_has_what_the_readme_reports(tmp_path, capsys):
    from a3c_core.cli import main

    out = tmp_path / "eval.json"
    ckpt = baby_a3c_checkpoint("pong-v4", 40)
    torch.set_num_threads(2)
    code = main(
        [
            "evaluate",
            "--env",
            "Pong-v4",
            "--checkpoint",
            str(ckpt),
            "--episodes",
            "2",
            "--greedy",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert torch.get_num_threads() == 1  # one core per process, as --processes says
    report = json.loads(out.read_text())
    assert report["episodes"] == 2 and report["policy"] == "greedy"
    assert {"mean", "std", "min", "max", "mean_length", "scores", "date"} <= set(report)
