"""The policy step: actions from the actor's logits, sampled or greedy (chapter 5).

Every loop that plays a policy chooses its actions here: a worker's rollouts
(chapter 5), `play_episode` and `evaluate` (chapter 6) and `saliency_rollout`
(chapter 7). Each of them runs over an `a3c_core.envs.AtariBatch` of games.
"""

import torch
import torch.nn.functional as F


def choose_actions(logits: torch.Tensor, greedy=False, generators=None):
    """Actions (B) from logits (B, A): the most likely, or drawn from the softmax as
    the seed played.

    `generators` is one torch.Generator for the whole batch (a worker's games) or
    a list of B, one per game (evaluation: each episode has its own seeded draws).
    The two agree: one generator draws for row after row what B draws in turn from
    it would.

    Book: chapter 5.
    """
    if greedy:
        return logits.argmax(-1)
    probs = F.softmax(logits, -1)  # (B, A)
    if generators is None or isinstance(generators, torch.Generator):
        return torch.multinomial(probs, 1, generator=generators).squeeze(-1)
    rows = probs.split(1)  # (1, A) each
    draws = [torch.multinomial(p, 1, generator=g) for p, g in zip(rows, generators)]
    return torch.cat(draws).squeeze(-1)
