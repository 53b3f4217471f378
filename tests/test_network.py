import pytest
import torch
import torch.nn.functional as F

from a3c_core.network import ActorCritic, FastELU, gru_cell
from tests.conftest import baby_a3c_checkpoint


@pytest.mark.parametrize(
    "game,actions", [("pong-v4", 6), ("breakout-v4", 4), ("spaceinvaders-v4", 6)]
)
def test_original_baby_a3c_checkpoints_load_strictly(game, actions):
    weights = torch.load(baby_a3c_checkpoint(game), weights_only=True)
    model = ActorCritic(actions)
    model.load_state_dict(weights, strict=True)  # raises on any name or shape mismatch


def test_parameter_names_and_counts_match_the_seed():
    model = ActorCritic(6)
    names = [name.split(".")[0] for name, _ in model.named_parameters()]
    assert list(dict.fromkeys(names)) == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "gru",
        "critic_linear",
        "actor_linear",
    ]
    assert sum(p.numel() for p in model.parameters()) == 842_407


def test_feature_maps_shrink_80_40_20_10_5():
    model = ActorCritic(4)
    x = torch.rand(2, 1, 80, 80)
    sizes = []
    for conv in (model.conv1, model.conv2, model.conv3, model.conv4):
        x = conv(x)
        sizes.append(x.shape[-1])
    assert sizes == [40, 20, 10, 5]
    assert model.features(torch.rand(2, 1, 80, 80)).shape == (2, 800)


def test_forward_shapes_and_memory():
    model = ActorCritic(6, hidden_size=256)
    hx = model.initial_state(3)
    values, logits, new_hx = model(torch.rand(3, 1, 80, 80), hx)
    assert values.shape == (3,) and logits.shape == (3, 6) and new_hx.shape == (3, 256)
    assert not torch.equal(new_hx, hx)


def test_channels_last_model_computes_the_same_as_default_layout():
    torch.manual_seed(0)
    model = ActorCritic(6)
    fast = ActorCritic(6).to(memory_format=torch.channels_last)
    fast.load_state_dict(model.state_dict())
    frames, hx = torch.rand(4, 1, 80, 80), torch.rand(4, 256)
    for a, b in zip(model(frames, hx), fast(frames, hx)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fast_elu_matches_torch_elu_and_its_gradient():
    x = torch.linspace(-20, 20, 100_001)
    x[::7] = 0.0
    y = FastELU.apply(x.clone())
    torch.testing.assert_close(y, F.elu(x), rtol=0, atol=1e-7)
    assert torch.equal(y[x > 0], x[x > 0])  # exact on the positive side
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    grad = torch.randn_like(x)
    F.elu(a * 1).backward(grad)
    FastELU.apply(b * 1).backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)


def test_gru_cell_is_torchs_gru_cell():
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(800, 256)
    x, hx = torch.randn(5, 800), torch.randn(5, 256)
    gi = F.linear(x, cell.weight_ih, cell.bias_ih)
    ours = gru_cell(gi, hx, cell.weight_hh, cell.bias_hh)
    torch.testing.assert_close(ours, cell(x, hx), rtol=1e-6, atol=1e-6)


def test_unroll_equals_stepping_forward_with_resets():
    torch.manual_seed(0)
    model = ActorCritic(6)
    T, B = 6, 3
    frames, hx = torch.rand(T, B, 1, 80, 80), torch.rand(B, 256)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[0, 1] = resets[3, 0] = True
    expected, h = [], hx
    for t in range(T):
        values, logits, h = model(frames[t], h * ~resets[t].unsqueeze(-1))
        expected.append((values, logits))
    features = model.features(frames.reshape(T * B, 1, 80, 80)).reshape(T, B, 800)
    values, logits = model.unroll(features, hx, resets)
    torch.testing.assert_close(values, torch.stack([v for v, _ in expected]))
    torch.testing.assert_close(logits, torch.stack([lg for _, lg in expected]))


def test_replayed_convolutions_give_autograds_gradients():
    """ConvReplay's batched backward equals backpropagating through `features`."""
    torch.manual_seed(0)
    model = ActorCritic(6).to(memory_format=torch.channels_last)
    frames, weights = torch.rand(6, 1, 80, 80), torch.randn(6, 800)
    (model.features(frames) * weights).sum().backward()
    expected = {
        name: p.grad.clone()
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    steps = [
        model.activations(frames[i : i + 2]) for i in (0, 2, 4)
    ]  # 3 steps, 2 games
    layers = [torch.cat(layer) for layer in zip(*steps)]
    features = model.replay_features(layers)
    torch.testing.assert_close(features, model.features(frames).detach())
    (features * weights).sum().backward()
    assert set(expected) == {
        f"conv{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")
    }
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad)


def test_bfloat16_convolutions_give_float32_features_and_gradients_close_to_fp32():
    """conv_dtype=bfloat16 keeps 8 bits of mantissa: features and conv gradients
    agree with float32 to a few percent, and the parameters stay float32."""
    torch.manual_seed(0)
    model = ActorCritic(6).to(memory_format=torch.channels_last)
    frames, weights = torch.rand(16, 1, 80, 80), torch.randn(16, 800)
    reference = model.features(frames)
    (reference * weights).sum().backward()
    expected = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    model.conv_dtype = torch.bfloat16
    layers = model.activations(frames)
    assert all(layer.dtype == torch.bfloat16 for layer in layers)
    features = model.replay_features(layers)
    assert features.dtype == torch.float32
    scale = reference.abs().max().item()
    torch.testing.assert_close(features, reference.detach(), atol=0.02 * scale, rtol=0)
    (features * weights).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(expected) == 8
    for grad, want in zip(grads, expected):
        assert grad.dtype == torch.float32
        error = (grad - want).norm() / want.norm()
        assert error < 0.05, error


def test_conv_precision_auto_is_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    from a3c_core.network import conv_precision

    assert conv_precision("float32") == torch.float32
    assert conv_precision("bfloat16") == torch.bfloat16
    for native, dtype in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert conv_precision("auto") == dtype
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # another torch
    assert conv_precision("auto") == torch.float32


def test_cpu_description_names_the_model_the_kernels_and_native_bfloat16(monkeypatch):
    from a3c_core import network

    kernels = torch.backends.cpu.get_cpu_capability()
    for native in (True, False):
        monkeypatch.setattr(network, "native_bfloat16", lambda n=native: n)
        text = network.cpu_description()
        model, _, rest = text.partition(", torch kernels: ")
        assert model  # a name, or "unknown CPU" where none is found
        assert rest == kernels + (", native bfloat16" if native else "")
