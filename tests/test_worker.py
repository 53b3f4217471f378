import queue

import numpy as np
import torch

from a3c_core.envs import AtariBatch
from a3c_core.network import ActorCritic
from a3c_core.worker import collect


class SpyModel(ActorCritic):
    """Records the memory each step starts from."""

    def forward(self, frames, hx):
        self.seen.append(hx.detach().clone())
        return super().forward(frames, hx)


def test_collect_resets_memory_at_episode_ends_and_reports_episodes():
    torch.manual_seed(0)
    model, events = SpyModel(6), queue.Queue()
    model.seen = []
    envs = AtariBatch("Pong-v4", num_envs=2, seed=0, max_episode_steps=4)
    hx, new_episode = torch.rand(2, 256), torch.tensor([False, True])
    generator = torch.Generator().manual_seed(0)
    rollout, hx, new_episode = collect(
        model, envs, hx, new_episode, 10, generator, events
    )
    assert rollout.values.shape == (10, 2) and rollout.logits.shape == (10, 2, 6)
    assert rollout.values.requires_grad  # the graph is kept for the update
    # env 1 starts an episode at step 0; both end an episode every 4 steps
    ends = rollout.dones.numpy()
    np.testing.assert_array_equal(ends[:, 1], [t % 4 == 3 for t in range(10)])
    for t in range(1, 10):
        for k in range(2):
            assert (model.seen[t][k].abs().sum() == 0) == bool(ends[t - 1, k])
    assert model.seen[0][1].abs().sum() == 0 and model.seen[0][0].abs().sum() > 0
    episodes = [event for event in list(events.queue) if event[0] == "episode"]
    assert len(episodes) == ends.sum()
    envs.close()
