import numpy as np
import pytest

from a3c_core.envs import AtariBatch, UnknownEnvError, check_env_id, make_env


def test_unknown_game_suggests_close_names():
    with pytest.raises(UnknownEnvError, match="did you mean .*Pong-v4"):
        check_env_id("Pongg-v4")


@pytest.mark.parametrize("env_id", ["Pong-v4", "Breakout-v4", "SpaceInvaders-v4"])
def test_seed_games_skip_2_to_4_frames_without_sticky_actions(env_id):
    env = make_env(env_id)
    assert env.spec.kwargs["frameskip"] == (2, 5)  # uniform in {2, 3, 4}
    assert env.spec.kwargs["repeat_action_probability"] == 0.0
    env.close()


def test_v5_ids_are_accepted():
    assert check_env_id("ALE/Pong-v5") == "ALE/Pong-v5"


def test_batch_observations_are_preprocessed_frames():
    envs = AtariBatch("Pong-v4", num_envs=3, seed=0, max_episode_steps=100)
    assert envs.obs.shape == (3, 1, 80, 80) and envs.obs.dtype == np.float32
    rewards, dones, finished = envs.step(np.zeros(3, dtype=int))
    assert rewards.shape == dones.shape == (3,)
    envs.close()


class FakeGame:
    """Stands in for an ALE env: reward 5 every step, never ends by itself."""

    def __init__(self, env):
        self.env = env

    def step(self, action):
        frame, _, _, _, info = self.env.step(action)
        return frame, 5.0, False, False, info

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)

    def close(self):
        self.env.close()


def test_rewards_are_clipped_for_learning_but_scores_stay_raw_and_episodes_are_cut():
    envs = AtariBatch("Pong-v4", num_envs=1, seed=0, max_episode_steps=30)
    envs.envs = [FakeGame(envs.envs[0])]
    for step in range(1, 31):
        rewards, dones, finished = envs.step(np.zeros(1, dtype=int))
        assert rewards[0] == 1.0  # clipped to [-1, 1]
        assert dones[0] == (step == 30)
    assert finished == [(150.0, 30)]  # raw score of 30 steps x 5
    assert envs.lengths[0] == 0 and envs.returns[0] == 0.0
    envs.close()


class RecordsResets(FakeGame):
    """FakeGame that remembers the seed of every reset."""

    def __init__(self, env):
        super().__init__(env)
        self.seeds = []

    def reset(self, **kwargs):
        self.seeds.append(kwargs.get("seed"))
        return super().reset(**kwargs)


def test_a_worker_batch_seeds_only_its_first_episodes():
    envs = AtariBatch("Pong-v4", num_envs=2, seed=10, max_episode_steps=3)
    envs.envs = [RecordsResets(env) for env in envs.envs]
    for _ in range(9):
        envs.step(np.zeros(2, dtype=int))
    assert [env.seeds for env in envs.envs] == [[None] * 3, [None] * 3]
    assert envs.live == [0, 1] and envs.results == []
    envs.close()


def test_a_batch_of_episodes_seeds_each_one_and_retires_games_when_none_is_left():
    envs = AtariBatch("Pong-v4", num_envs=2, seed=10, max_episode_steps=2, episodes=5)
    envs.envs = [RecordsResets(env) for env in envs.envs]  # episodes 0, 1 started
    live = []
    for _ in range(6):  # every episode lasts 2 agent steps
        live.append(envs.live)
        _, dones, _ = envs.step(np.zeros(len(envs.live), dtype=int))
        assert len(dones) == len(live[-1]) and len(envs.obs) == len(envs.live)
    assert live == [[0, 1]] * 4 + [[0]] * 2 and envs.live == []
    assert [env.seeds for env in envs.envs] == [[12, 14], [13]]  # seed + episode
    assert envs.results == [(10.0, 2)] * 5  # raw: 5 per step in FakeGame
    assert envs.obs.shape == (0, 1, 80, 80)
    envs.close()
