"""The actor-critic network of baby-a3c (chapter 2).

Four 3x3 stride-2 convolutions with ELU shrink one 80x80 frame to 32x5x5 = 800
features; a GRU cell carries memory across steps (the agent sees one frame, so
motion must come from memory); two linear heads give the value V(s) and the action
logits. Parameter names are the seed's, so its checkpoints load with strict=True.

`forward` takes one step for a batch of B environments; a worker calls it once per
step for all its games and backpropagates through the whole rollout afterwards.
"""

import torch
import torch.nn.functional as F
from torch import nn

CONV_CHANNELS = 32
CONV_OUT = CONV_CHANNELS * 5 * 5  # 80 -> 40 -> 20 -> 10 -> 5 pixels per side


class ActorCritic(nn.Module):
    """baby-a3c's network: 4 conv + ELU, GRUCell(800, hidden), critic and actor heads.

    Book: chapter 2.
    """

    def __init__(self, num_actions: int, hidden_size: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(1, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.gru = nn.GRUCell(CONV_OUT, hidden_size)
        self.critic_linear = nn.Linear(hidden_size, 1)
        self.actor_linear = nn.Linear(hidden_size, num_actions)
        self.hidden_size = hidden_size

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 80) -> (N, 800). ELU in place: fresh memory is costly on CPU."""
        x = frames.contiguous(memory_format=torch.channels_last)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.elu(conv(x), inplace=True)
        return x.reshape(len(frames), CONV_OUT)

    def heads(self, hx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., H) memory -> values (...) and action logits (..., A)."""
        return self.critic_linear(hx).squeeze(-1), self.actor_linear(hx)

    def forward(self, frames, hx):
        """One step: frames (B, 1, 80, 80), hx (B, H) -> values (B), logits (B, A),
        and the new hx (B, H)."""
        hx = self.gru(self.features(frames), hx)  # (B, H)
        values, logits = self.heads(hx)
        return values, logits, hx

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """Zero memory for `batch_size` environments: (B, H)."""
        return torch.zeros(batch_size, self.hidden_size)
