import torch

from a3c_core.policy import choose_actions


def test_greedy_actions_are_the_most_likely():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.0]])
    assert choose_actions(logits, greedy=True).tolist() == [1, 0]


def test_one_generator_for_the_batch_draws_what_one_per_game_draws_in_turn():
    torch.manual_seed(0)
    logits = torch.randn(50, 8, 6)  # 50 steps of 8 games
    batch, shared = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in logits:
        together = choose_actions(step, generators=batch)
        in_turn = choose_actions(step, generators=[shared] * len(step))
        assert torch.equal(together, in_turn)


def test_with_a_generator_per_game_a_game_draws_the_same_in_any_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    alone = choose_actions(logits[2:3], generators=[torch.Generator().manual_seed(7)])
    seeds = [1, 2, 7, 4]
    batch = choose_actions(
        logits, generators=[torch.Generator().manual_seed(s) for s in seeds]
    )
    assert batch[2] == alone[0] and batch.shape == (4,)


def test_sampled_actions_follow_the_softmax():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20_000, 3)
    actions = choose_actions(logits, generators=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(actions, minlength=3) / len(actions)
    torch.testing.assert_close(
        frequencies, torch.tensor([0.7, 0.2, 0.1]), atol=0.01, rtol=0
    )
