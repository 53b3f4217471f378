"""Every committed agent in pretrained/ loads, fits its game and plays."""

import json

import pytest
import torch

from a3c_core.checkpoint import load_agent
from a3c_core.config import A3CConfig
from a3c_core.envs import num_actions
from a3c_core.play import play_episode
from a3c_core.runs import PRETRAINED, training_info

AGENTS = sorted(p for p in PRETRAINED.glob("*") if (p / "model.pt").exists())


def test_there_is_at_least_one_agent():
    assert AGENTS, "pretrained/ holds no agent"


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_agent_loads_strictly_and_matches_its_game(folder):
    weights = torch.load(folder / "model.pt", weights_only=True)
    config = A3CConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert folder.name == config.env_id.lower().replace("/", "-")
    assert weights["actor_linear.weight"].shape[0] == num_actions(config.env_id)
    model = load_agent(config.env_id, folder)  # strict=True inside
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, weights[name])


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_agent_plays_a_short_greedy_rollout(folder):
    config = A3CConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = load_agent(config.env_id, folder)
    episode = play_episode(model, config.env_id, seed=0, greedy=True, max_steps=200)
    assert 0 < episode.length <= 200


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_evaluations_are_of_this_agent_with_the_policy_their_name_says(folder):
    config = A3CConfig.from_dict(json.loads((folder / "config.json").read_text()))
    trained = training_info(folder)  # from log.csv, which ends at the checkpoint
    for name, policy in (("eval.json", "sampled"), ("eval-greedy.json", "greedy")):
        if not (folder / name).exists():
            continue
        report = json.loads((folder / name).read_text())
        assert (report["env_id"], report["policy"]) == (config.env_id, policy), name
        assert report["episodes"] >= 30 and len(report["scores"]) == report["episodes"]
        # evaluated on the committed weights, not an older checkpoint
        assert report["trained"] == trained, name
