"""State-space memories: a pure-PyTorch Mamba stack and the light `SimpleSSM`.

Both expose the same interface, with the batch first in every state tensor:
  init_state(batch, device)            -> dict of fixed-size tensors
  forward(x (B, L, d), state or None)  -> y (B, L, d), new state    (sequence mode)
  step(x (B, d), state)                -> y (B, d), new state       (one timestep)
and say which further sequence modes they have (`supports_parallel_gates`: forward_gated,
`supports_keeping_states`: forward_keeping_states; the Mamba stack has both, SimpleSSM neither).

The Mamba stack keeps the reference parameter names (`layers.{i}.mixer.in_proj`, `conv1d`,
`x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`, `layers.{i}.norm`, `norm_f`) so mamba-ssm and
Hugging Face `MambaForCausalLM` weights load by name. The residual stream and both parts of
the state (conv window, scan) are kept in float32, so a stream's state has the same bytes
whatever autocast or code path produced it.
The official CUDA kernels (mamba-ssm, causal-conv1d: the `mamba_mixer` op's "mamba_ssm" in
`smt.kernels`) are used only for sequence mode on a CUDA device, from a fresh state, when they
import and the config's `use_cuda_kernels` allows them; they are imported lazily because the
kernel package imports Triton at import time and fails on CPU-only machines.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smt import kernels
from smt.config import StrideHybridConfig
from smt.kernels import Kernel
from smt.models.components.scan import (
    gated_scan,
    gated_scan_reference,
    gated_window,
    linear_scan,
    scan_keeping_states,
    selective_scan,
)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (bf16 squares lose too much)."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


@lru_cache(maxsize=1)
def _cuda_kernels():
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or Triton failing without a GPU
        return None
    return selective_scan_fn, causal_conv1d_fn


class MambaMixer(nn.Module):
    """One Mamba (S6) mixer with the reference parameter names."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, dt_rank: int,
                 use_cuda_kernels: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1,
                 init: str = "mamba") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state, self.d_conv, self.dt_rank = d_state, d_conv, dt_rank
        self.use_cuda_kernels = use_cuda_kernels
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # Mamba's initialisation: dt in [dt_min, dt_max] log-uniformly, through softplus's inverse
        nn.init.uniform_(self.dt_proj.weight, -dt_rank**-0.5, dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            if init == "mimetic":
                # Trockman et al. 2024: start close to linear attention. A near zero (the state barely
                # decays), and C's projection equal to B's, so C_t . B_s scores like a query-key product.
                self.A_log.sub_(math.log(100.0))
                rows = self.x_proj.weight
                rows[dt_rank + d_state:].copy_(rows[dt_rank:dt_rank + d_state])

    def init_state(self, batch: int, device=None) -> tuple[Tensor, Tensor]:
        conv = torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device)
        scan = torch.zeros(batch, self.d_inner, self.d_state, device=device)
        return conv, scan

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, hidden: Tensor, state: tuple[Tensor, Tensor] | None = None, keep_states: bool = False):
        """Sequence mode: hidden (B, L, d) -> (B, L, d), new (conv, scan) state. keep_states=True also
        returns the scan state after every timestep, (B, L, d_inner, d_state) float32, formed by the
        chunked linear scan through autograd (the per-token memory read needs them). From a fresh state
        the whole layer may run as the `mamba_mixer` op's kernel (`smt.kernels`)."""
        if self.use_cuda_kernels and state is None and not keep_states:
            return kernels.choose("mamba_mixer", hidden).fn(self, hidden)
        return self._forward_sequence(hidden, state, keep_states)

    def _forward_sequence(self, hidden: Tensor, state: tuple[Tensor, Tensor] | None = None,
                          keep_states: bool = False):
        """`forward` in PyTorch (the reference of the `mamba_mixer` op), its scan through `selective_scan`."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = x.transpose(1, 2)  # (B, di, L)
        conv_state, scan_state = state if state is not None else (None, None)
        if conv_state is None:
            conv_in = F.pad(x, (self.d_conv - 1, 0))
        else:
            conv_in = torch.cat([conv_state.to(x.dtype), x], dim=-1)
        new_conv = conv_in[..., conv_in.shape[-1] - (self.d_conv - 1):]
        x = F.silu(F.conv1d(conv_in, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner))
        x = x.transpose(1, 2)  # (B, L, di)
        delta, Bm, Cm = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if keep_states:
            states = scan_keeping_states(x, delta, A, Bm, scan_state)
            y = (torch.einsum("blds,bls->bld", states, Cm.float()) + x.float() * self.D.float()).to(x.dtype)
            return self.out_proj(y * F.silu(z)), (new_conv.float(), states[:, -1]), states
        y, last = selective_scan(x, delta, A, Bm, Cm, self.D, scan_state)
        y = y * F.silu(z)
        return self.out_proj(y), (new_conv.float(), last)

    def forward_gated(self, hidden: Tensor, gates: Tensor, state: tuple[Tensor, Tensor] | None = None,
                      keep_states: bool = False):
        """Sequence mode with a write gate per timestep, gates (B, L) in [0, 1]: the same maths as `step`
        followed by the gate's blend of each part of the state, s_t = g_t step(s_{t-1}, x_t) + (1 - g_t)
        s_{t-1}, with every output the ungated step's (as `memory.chain.ssm_steps`, its reference). Both
        parts stay linear recurrences: the scan runs as `scan.gated_scan` (whichever implementation
        `smt.kernels` chooses: native on CPU, Triton on CUDA, fused for large states, else the chunked
        reference), or with keep_states as the chunked `gated_scan_reference`, which keeps every state;
        the conv window as d_conv - 1 first-order recurrences with decay 1 - g, entry j taking entry j + 1
        of the step before and the newest entry the input (`scan.gated_window`). A closed step (g = 0)
        leaves both parts bit for bit. Returns the output, the new (conv, scan) state and, with keep_states,
        the scan state after every step."""
        batch = hidden.shape[0]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (B, L, di)
        conv_state, scan_state = state if state is not None else self.init_state(batch, hidden.device)
        g = gates.float().unsqueeze(-1)  # (B, L, 1)
        window, conv = gated_window(x, g, conv_state)  # (B, L, d_conv, di)
        # summed over a middle axis, every operand contiguous in d_inner
        x = F.silu((window.to(x.dtype) * self.conv1d.weight.squeeze(1).t()).sum(2) + self.conv1d.bias)
        delta, Bm, Cm = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        args = (x, delta, A, Bm, Cm, self.D, g, scan_state.float())
        if keep_states:
            y, last, states = gated_scan_reference(*args, keep_states=True)
        else:
            (y, last), states = gated_scan(*args), None
        out = self.out_proj(y.to(x.dtype) * F.silu(z))
        return out, (conv, last), states

    def _forward_cuda(self, hidden: Tensor, kernels) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        selective_scan_fn, causal_conv1d_fn = kernels
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (B, di, L)
        new_conv = F.pad(x, (self.d_conv - 1, 0))[..., -(self.d_conv - 1):] if self.d_conv > 1 else x[..., :0]
        x = causal_conv1d_fn(x.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        dt, Bm, Cm = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        y, last = selective_scan_fn(
            x, delta.contiguous(), A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(),
            self.D.float(), z=z.contiguous(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=True,
        )
        return self.out_proj(y.transpose(1, 2)), (new_conv.float(), last)

    def step(self, hidden: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One timestep: hidden (B, d) -> (B, d), new state; the same maths as `forward`."""
        conv_state, scan_state = state
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (B, di)
        window = torch.cat([conv_state.to(x.dtype), x.unsqueeze(-1)], dim=-1)  # (B, di, d_conv)
        x = F.silu((window * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias)
        delta, Bm, Cm = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        delta32, x32 = delta.float(), x.float()
        scan = (torch.exp(delta32.unsqueeze(-1) * A) * scan_state.float()
                + (delta32 * x32).unsqueeze(-1) * Bm.float().unsqueeze(1))
        y = (scan * Cm.float().unsqueeze(1)).sum(-1) + x32 * self.D.float()
        y = y.to(x.dtype) * F.silu(z)
        return self.out_proj(y), (window[..., 1:].float(), scan)


class _ResidualStack(nn.Module):
    """Pre-norm residual stack with a float32 residual stream and a final RMSNorm `norm_f`.

    Subclasses provide `layers` (each with `norm` and `mixer`) and per-layer state handling.
    """

    state_names: tuple[str, ...] = ()
    # the sequence modes beyond `forward` that a stack has, set where they are defined (MambaStack); a
    # memory chooses its path by these: `forward_gated`, a write gate per step through one scan per
    # layer, and `forward_keeping_states`, the last layer's scan state after every step
    supports_parallel_gates: bool = False
    supports_keeping_states: bool = False

    def _layer_state(self, state: dict[str, Tensor] | None, i: int):
        if state is None:
            return None
        return tuple(state[name][:, i] for name in self.state_names)

    def _pack_state(self, per_layer: list[tuple[Tensor, ...]]) -> dict[str, Tensor]:
        return {name: torch.stack([s[j] for s in per_layer], dim=1) for j, name in enumerate(self.state_names)}

    def init_state(self, batch: int, device=None) -> dict[str, Tensor]:
        return self._pack_state([layer.mixer.init_state(batch, device) for layer in self.layers])

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None):
        residual = x.float()
        new_states = []
        for i, layer in enumerate(self.layers):
            out, s = layer.mixer(layer.norm(residual.to(x.dtype)), self._layer_state(state, i))
            residual = residual + out.float()
            new_states.append(s)
        return self.norm_f(residual.to(x.dtype)), self._pack_state(new_states)

    def step(self, x: Tensor, state: dict[str, Tensor]):
        residual = x.float()
        new_states = []
        for i, layer in enumerate(self.layers):
            out, s = layer.mixer.step(layer.norm(residual.to(x.dtype)), self._layer_state(state, i))
            residual = residual + out.float()
            new_states.append(s)
        return self.norm_f(residual.to(x.dtype)), self._pack_state(new_states)


class MambaLayer(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = mixer


class MambaStack(_ResidualStack):
    """`n_layers` Mamba blocks (Mamba-130M: 24 layers, d=768, d_state=16, expand=2)."""

    state_names = ("ssm_conv", "ssm_scan")
    supports_parallel_gates = True
    supports_keeping_states = True

    def __init__(self, d_model: int, n_layers: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, eps: float = 1e-5, use_cuda_kernels: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 0.1, init: str = "mamba") -> None:
        super().__init__()
        dt_rank = dt_rank or math.ceil(d_model / 16)
        self.layers = nn.ModuleList(
            MambaLayer(MambaMixer(d_model, d_state, d_conv, expand, dt_rank, use_cuda_kernels, dt_min, dt_max, init),
                       d_model, eps)
            for _ in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model, eps)
        for layer in self.layers:  # Mamba: shrink the residual output projections with depth
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(n_layers)

    def forward_keeping_states(self, x: Tensor, state: dict[str, Tensor] | None = None):
        """`forward`, also returning the last layer's scan state after every timestep (B, L, d_inner,
        d_state): the states a per-token memory read queries, without a step-by-step loop."""
        residual = x.float()
        new_states = []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            result = layer.mixer(layer.norm(residual.to(x.dtype)), self._layer_state(state, i), keep_states=last)
            residual = residual + result[0].float()
            new_states.append(result[1])
        return self.norm_f(residual.to(x.dtype)), self._pack_state(new_states), result[2]

    def forward_gated(self, x: Tensor, gates: Tensor, state: dict[str, Tensor] | None = None,
                      keep_states: bool = False):
        """Sequence mode with a write gate per timestep (B, L), every layer's state blended by it
        (`MambaMixer.forward_gated`); the step loop of `memory.chain.ssm_steps` is the reference.
        Returns y, the new state and, with keep_states, the last layer's scan state after every step."""
        residual = x.float()
        new_states = []
        for i, layer in enumerate(self.layers):
            last = keep_states and i == len(self.layers) - 1
            out, s, states = layer.mixer.forward_gated(layer.norm(residual.to(x.dtype)), gates,
                                                       self._layer_state(state, i), keep_states=last)
            residual = residual + out.float()
            new_states.append(s)
        return self.norm_f(residual.to(x.dtype)), self._pack_state(new_states), states


class DiagonalRecurrence(nn.Module):
    """h_t = a * h_{t-1} + (1 - a) * W_in x_t (a per channel, learned in (0, 1)); y = W_out h."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.d_hidden = d_hidden
        self.in_proj = nn.Linear(d_model, d_hidden, bias=False)
        # decays spread from fast (0.5) to slow (0.999) so some channels keep long memory
        decay = torch.linspace(0.5, 0.999, d_hidden)
        self.decay_logit = nn.Parameter(torch.log(decay / (1 - decay)))
        self.out_proj = nn.Linear(d_hidden, d_model, bias=False)

    def init_state(self, batch: int, device=None) -> tuple[Tensor]:
        return (torch.zeros(batch, self.d_hidden, device=device),)

    def forward(self, x: Tensor, state: tuple[Tensor] | None = None):
        a = torch.sigmoid(self.decay_logit.float())
        drive = (1 - a) * self.in_proj(x).float()
        h0 = None if state is None else state[0].float()
        states = linear_scan(a.expand_as(drive), drive, h0)
        return self.out_proj(states.to(x.dtype)), (states[:, -1],)

    def step(self, x: Tensor, state: tuple[Tensor]):
        a = torch.sigmoid(self.decay_logit.float())
        h = a * state[0].float() + (1 - a) * self.in_proj(x).float()
        return self.out_proj(h.to(x.dtype)), (h,)


class SimpleSSM(_ResidualStack):
    """The light memory: a stack of diagonal linear recurrences with RMSNorm and residuals."""

    state_names = ("ssm_hidden",)

    def __init__(self, d_model: int, n_layers: int, d_hidden: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        d_hidden = d_hidden or 2 * d_model
        self.layers = nn.ModuleList(MambaLayer(DiagonalRecurrence(d_model, d_hidden), d_model, eps)
                                    for _ in range(n_layers))
        self.norm_f = RMSNorm(d_model, eps)


def build_ssm(config: StrideHybridConfig) -> _ResidualStack:
    """The SSM stack a config asks for."""
    if config.ssm_type == "simple":
        return SimpleSSM(config.d_model, config.ssm_n_layers, config.d_inner, config.rms_norm_eps)
    return MambaStack(config.d_model, config.ssm_n_layers, config.ssm_d_state, config.ssm_d_conv,
                      config.ssm_expand, config.dt_rank, config.rms_norm_eps, config.use_cuda_kernels,
                      *config.dt_init_range, config.ssm_init)


def _mixer_reference(mixer: MambaMixer, hidden: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    return mixer._forward_sequence(hidden)


def _mixer_mamba_ssm(mixer: MambaMixer, hidden: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    return mixer._forward_cuda(hidden, _cuda_kernels())


def _mamba_ssm_installed() -> bool:
    return _cuda_kernels() is not None


def _register() -> None:
    """The mamba_mixer op: a Mamba layer's sequence mode from a fresh state (see `smt.kernels`)."""
    kernels.define("mamba_mixer", _mixer_reference, "-", "a Mamba layer's sequence mode from a fresh state "
                   "(MambaMixer.forward); reference: the PyTorch layer, its scan through selective_scan")
    kernels.register(Kernel("mamba_mixer", "mamba_ssm", _mixer_mamba_ssm, devices=("cuda",),
                            dtypes=(torch.float16, torch.bfloat16, torch.float32), available=_mamba_ssm_installed,
                            about="mamba-ssm and causal-conv1d (the cuda extra); the config's use_cuda_kernels: "
                                  "false leaves it out"))


_register()
