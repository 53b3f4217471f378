"""The actor-critic network of baby-a3c (chapter 2).

Four 3x3 stride-2 convolutions with ELU shrink one 80x80 frame to 32x5x5 = 800
features; a GRU cell carries memory across steps (the agent sees one frame, so
motion must come from memory); two linear heads give the value V(s) and the action
logits. Parameter names are the seed's, so its checkpoints load with strict=True.

`forward` takes one step for a batch of B environments (acting, playing). A worker
learns differently, to give the CPU large batches: while acting it keeps every
layer's activations (no autograd graph), and to learn it replays the rollout:
`replay_features` backpropagates through the convolutions once for all T steps, and
`unroll` runs the GRU and the heads with one matrix product for the GRU's input
weights instead of T small ones.
"""

import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

CONV_CHANNELS = 32
CONV_OUT = CONV_CHANNELS * 5 * 5  # 80 -> 40 -> 20 -> 10 -> 5 pixels per side


class FastELU(torch.autograd.Function):
    """ELU (alpha = 1) in place, from exp: elu(x) = max(x, exp(min(x, 0)) - 1).

    torch's ELU kernel evaluates expm1, which was much slower than exp on the AVX2
    CPU this was tuned on (on AVX-512 the two can be level; chapter 2 times both
    ELUs). The max works because
    exp(x) - 1 >= x for every x, with exp(0) - 1 = 0 < x for x > 0: exact there, and
    within ~6e-8 of expm1 elsewhere. The backward is torch's own ELU gradient
    computed from the output (grad where y > 0, else grad * (y + 1)).

    Book: chapter 2.
    """

    @staticmethod
    def forward(ctx, x):
        negative = torch.clamp(x, max=0).exp_().sub_(1)  # exp(min(x, 0)) - 1
        y = torch.maximum(x, negative, out=x)  # in place: fresh memory is costly
        ctx.mark_dirty(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, y)


class ConvReplay(torch.autograd.Function):
    """The convolutions over a rollout: the forward pass returns features computed
    while acting; the backward pass runs each layer's ELU and convolution backward
    once for all N = T * K frames, which a CPU does faster than T batches of K.

    Book: chapter 2.
    """

    @staticmethod
    def forward(ctx, convs, *tensors):  # the activations, then weight, bias per conv
        ctx.convs = convs
        # saved, not stored on ctx: freed after backward, and autograd checks that
        # nothing modified them in place in between
        ctx.save_for_backward(*tensors)
        last = tensors[len(convs)]  # (N, 32, 5, 5), float32 or bfloat16
        return last.reshape(len(last), CONV_OUT).float()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        acts = ctx.saved_tensors[: len(ctx.convs) + 1]
        weights, grads = ctx.saved_tensors[len(ctx.convs) + 1 :: 2], []
        dtype = acts[-1].dtype  # the backward runs in the precision of the forward
        grad = grad.to(dtype).reshape(acts[-1].shape)
        grad = grad.contiguous(memory_format=torch.channels_last)
        for i in reversed(range(len(ctx.convs))):
            conv = ctx.convs[i]
            grad = torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, acts[i + 1])
            geometry = (conv.stride, conv.padding, conv.dilation, False, [0, 0], 1)
            wanted = [i > 0, True, True]  # no gradient for the input frames
            grad, d_weight, d_bias = torch.ops.aten.convolution_backward(
                grad, acts[i], weights[i].to(dtype), [conv.out_channels], *geometry,
                wanted,
            )  # fmt: skip
            grads = [d_weight.float(), d_bias.float(), *grads]  # Adam's are float32
        return None, *[None] * len(acts), *grads


def gru_cell(gi, hx, weight_hh, bias_hh):
    """torch's GRUCell, given its input half gi = W_ih x + b_ih (B, 3H) precomputed.

    r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
    h' = (1 - z) n + z h, with gh = W_hh h + b_hh; hx (B, H) -> (B, H).

    Book: chapter 2.
    """
    gi_r, gi_z, gi_n = gi.chunk(3, -1)
    gh_r, gh_z, gh_n = F.linear(hx, weight_hh, bias_hh).chunk(3, -1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return n + z * (hx - n)


def native_bfloat16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512_BF16 or AMX)? Elsewhere
    bfloat16 convolutions are emulated, slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def cpu_description() -> str:
    """The CPU's model name, torch's vector kernels on it and whether bfloat16 is
    native: sessions run on different machines, so a measurement must say which one
    it came from, and whether conv_dtype="auto" trains in bfloat16 there."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1] for line in lines if line.startswith("model name")]
    model = names[0].strip() if names else platform.processor() or "unknown CPU"
    native = ", native bfloat16" if native_bfloat16() else ""
    return f"{model}, torch kernels: {torch.backends.cpu.get_cpu_capability()}{native}"


def conv_precision(name: str) -> torch.dtype:
    """The dtype of A3CConfig.conv_dtype: "auto" is bfloat16 where it is native."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16() else torch.float32
    return getattr(torch, name)


class ActorCritic(nn.Module):
    """baby-a3c's network: 4 conv + ELU, GRUCell(800, hidden), critic and actor heads.

    Book: chapter 2.
    """

    def __init__(
        self,
        num_actions: int,
        hidden_size: int = 256,
        conv_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(1, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, stride=2, padding=1)
        self.gru = nn.GRUCell(CONV_OUT, hidden_size)
        self.critic_linear = nn.Linear(hidden_size, 1)
        self.actor_linear = nn.Linear(hidden_size, num_actions)
        self.hidden_size = hidden_size
        # the precision of the convolutions while training (`activations` and the
        # replayed backward); playing and `forward` stay float32
        self.conv_dtype = conv_dtype

    @property
    def convs(self) -> tuple[nn.Conv2d, ...]:
        """conv1..conv4, in order."""
        return self.conv1, self.conv2, self.conv3, self.conv4

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 80) -> (N, 800)."""
        x = frames.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = FastELU.apply(conv(x))
        return x.reshape(len(frames), CONV_OUT)

    @torch.no_grad()
    def activations(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """The frames (N, 1, 80, 80) and every convolution's output after its ELU,
        without a graph, in `conv_dtype`; the last one, reshaped to (N, 800), is
        `features`. bfloat16 halves the memory and, on CPUs with AVX512_BF16, about
        doubles the speed of the convolutions (chapter 2)."""
        dtype = self.conv_dtype
        # a copy: the frames are kept until learning, and the caller may reuse its array
        layers = [frames.to(dtype, memory_format=torch.channels_last, copy=True)]
        for conv in self.convs:
            weight, bias = conv.weight.to(dtype), conv.bias.to(dtype)  # no-op if same
            x = F.conv2d(layers[-1], weight, bias, conv.stride, conv.padding)
            layers.append(FastELU.apply(x))
        return layers

    def replay_features(self, activations: list[torch.Tensor]) -> torch.Tensor:
        """(N, 800) features from `activations`, with a time-batched backward."""
        params = [p for conv in self.convs for p in (conv.weight, conv.bias)]
        return ConvReplay.apply(self.convs, *activations, *params)

    def heads(self, hx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., H) memory -> values (...) and action logits (..., A)."""
        return self.critic_linear(hx).squeeze(-1), self.actor_linear(hx)

    def forward(self, frames, hx):
        """One step: frames (B, 1, 80, 80), hx (B, H) -> values (B), logits (B, A),
        and the new hx (B, H)."""
        hx = self.gru(self.features(frames), hx)  # (B, H)
        values, logits = self.heads(hx)
        return values, logits, hx

    def unroll(self, features, hx, resets):
        """The GRU and heads over a rollout, for learning: features (T, B, 800) with
        their graph, hx (B, H) the memory before it, resets (T, B) true where an
        episode starts (memory zeroed) -> values (T, B) and logits (T, B, A)."""
        gi = F.linear(features, self.gru.weight_ih, self.gru.bias_ih)  # all T at once
        states = []
        for t in range(len(features)):
            hx = hx * ~resets[t].unsqueeze(-1)
            hx = gru_cell(gi[t], hx, self.gru.weight_hh, self.gru.bias_hh)
            states.append(hx)
        return self.heads(torch.stack(states))

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """Zero memory for `batch_size` environments: (B, H)."""
        return torch.zeros(batch_size, self.hidden_size)
