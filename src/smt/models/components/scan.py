"""Linear recurrences h_t = a_t * h_{t-1} + b_t over a sequence, and Mamba's selective scan.

`linear_scan_reference` is the plain per-timestep loop (the oracle). `linear_scan_chunked`
gives the same states with about 2*sqrt(L) sequential steps instead of L: the sequence is cut
into chunks; (1) all chunks are scanned at once from a zero start, step by step inside the
chunk; (2) the chunk-end states are chained across chunks; (3) each chunk's states get the
carried start state times the running decay. Only products of decays (<= 1 for an SSM) are
formed, so nothing overflows, unlike a log-space cumsum/division. The scan runs in float32
whatever the input dtype.

`selective_scan` (Mamba) uses neither: its fast path, `_FusedSelectiveScan`, runs the recurrence
one in-place update per timestep, in cache-sized blocks, with a hand-written backward, and
`selective_scan_ref`, the per-timestep loop through autograd, is its reference.

`gated_scan` is the scan of a Mamba memory with a write gate per step (`MambaMixer.forward_gated`):
`_FusedGatedScan`, built the same way, is its fast path, and `gated_scan_reference`, the chunked
linear scan through autograd, its reference (and the path that keeps every state).

`gated_window` is the gated convolution window of the same memory: d_conv - 1 chained first-order
recurrences, `gated_window_reference` (chunked scans through autograd) and `_NativeGatedWindow`.

Every op registers its implementations with `smt.kernels` at the end of this module, which chooses
among them per call: on CPU the scans and the window run as one C loop per call, forward and backward
(`_NativeGatedScan`, `_NativeGatedWindow` over `smt.native`; the selective scan as the gated one with
every gate open, which is the same maths exactly); on CUDA, with Triton installed, as the Triton
kernels of `triton_scan`; elsewhere, or under `kernels.use("fused")` / `kernels.use("reference")`, the
PyTorch paths above.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smt import kernels
from smt import native as native_scan
from smt.kernels import Kernel
from smt.models.components import triton_scan


def linear_scan_reference(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """States (B, L, *S) of h_t = a_t * h_{t-1} + b_t, one timestep at a time."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim=1)


def linear_scan_chunked(a: Tensor, b: Tensor, h0: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Same result as `linear_scan_reference`, with O(sqrt(L)) sequential steps."""
    B, L = a.shape[:2]
    rest = a.shape[2:]
    if L <= 2:
        return linear_scan_reference(a, b, h0)
    chunk = chunk or max(1, math.isqrt(L))
    n_chunks = math.ceil(L / chunk)
    pad = n_chunks * chunk - L
    if pad:
        a = torch.cat([a, a.new_ones(B, pad, *rest)], dim=1)
        b = torch.cat([b, b.new_zeros(B, pad, *rest)], dim=1)
    a = a.view(B, n_chunks, chunk, *rest)
    b = b.view(B, n_chunks, chunk, *rest)
    # Slices are taken with unbind, once: indexing a[:, :, i] in the loops would make each
    # step's backward allocate and accumulate a gradient the size of the whole input.
    # (1) every chunk from a zero start, and the running product of decays inside it
    a_steps, b_steps = a.unbind(2), b.unbind(2)
    local, decay = [b_steps[0]], [a_steps[0]]
    for a_i, b_i in zip(a_steps[1:], b_steps[1:]):
        local.append(a_i * local[-1] + b_i)
        decay.append(a_i * decay[-1])
    local_states = torch.stack(local, dim=2)
    decays = torch.stack(decay, dim=2)
    # (2) chain the chunk ends
    h = torch.zeros_like(b[:, 0, 0]) if h0 is None else h0
    starts = []
    for end_decay, end_state in zip(decay[-1].unbind(1), local[-1].unbind(1)):
        starts.append(h)
        h = end_decay * h + end_state
    carried = torch.stack(starts, dim=1).unsqueeze(2)
    # (3) add the carried start state everywhere
    states = local_states + decays * carried
    return states.reshape(B, n_chunks * chunk, *rest)[:, :L]


class _FusedSelectiveScan(torch.autograd.Function):
    """Mamba's selective scan with a hand-written backward, all in float32, time-major (L, b, ...).

    The sequence is processed in blocks of a few timesteps whose (block, b, d_inner, d_state)
    tensors fit in cache: per block, the decays and drives are formed, the recurrence runs one
    in-place addcmul per timestep, and the states are contracted with C. Only the state at each
    block start is kept for the backward, which recomputes a block's states from it, runs the
    adjoint recurrence dH_t = G_t + dA_{t+1} * dH_{t+1} the same way and forms the block's share
    of every gradient. Nothing of size (L, b, d_inner, d_state) is ever materialised, and nothing
    is recorded per timestep.
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        def block_states(t0: int, t1: int, h: Tensor) -> tuple[Tensor, Tensor]:
            states = _block_states(u[t0:t1], delta[t0:t1], A, B[t0:t1], h)[1]
            return states, states[-1]

        y, last, starts, ctx.block = _scan_in_blocks(u, C, h0, block_states)
        ctx.save_for_backward(u, delta, A, B, C, *starts)
        return y, last

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor) -> tuple[Tensor, ...]:
        u, delta, A, B, C, *starts = ctx.saved_tensors
        L, block = u.shape[0], ctx.block
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A = torch.zeros_like(A)
        running = grad_last
        for index in range(len(starts) - 1, -1, -1):
            t0 = index * block
            t1 = min(t0 + block, L)
            u_b, delta_b, B_b, C_b, g_y = u[t0:t1], delta[t0:t1], B[t0:t1], C[t0:t1], grad_y[t0:t1]
            decay, states = _block_states(u_b, delta_b, A, B_b, starts[index])
            grad_states = g_y.unsqueeze(-1) * C_b.unsqueeze(2)  # the direct part, then the adjoint
            acc = grad_states[-1].add_(running)
            for t in range(t1 - t0 - 2, -1, -1):
                acc = torch.addcmul(grad_states[t], decay[t + 1], acc, out=grad_states[t])
            running = decay[0] * grad_states[0]
            # d loss / d (delta * A) = dH_t * h_{t-1} * decay_t, with h_{t-1} the previous state
            decay[1:].mul_(states[:-1])
            decay[0].mul_(starts[index])
            grad_decay = decay.mul_(grad_states)
            grad_A.add_((grad_decay * delta_b.unsqueeze(-1)).sum((0, 1)))
            grad_delta_b = grad_decay.mul_(A).sum(-1)
            deltau = delta_b * u_b
            grad_deltau = _contract_state(grad_states, B_b)
            grad_B[t0:t1] = _contract_index(grad_states, deltau)
            grad_C[t0:t1] = _contract_index(states, g_y)
            torch.mul(grad_deltau, delta_b, out=grad_u[t0:t1])
            torch.addcmul(grad_delta_b, grad_deltau, u_b, out=grad_delta[t0:t1])
        return grad_u, grad_delta, grad_A, grad_B, grad_C, running


SCAN_BLOCK_BYTES = 1 << 19  # a block's (block, b, d_inner, d_state) tensors stay within L2 cache


def _scan_in_blocks(u: Tensor, C: Tensor, h0: Tensor, block_states) -> tuple[Tensor, Tensor, list[Tensor], int]:
    """The forward both fused scans share: block by block, block_states(t0, t1, h) gives the states the
    outputs read, (block, b, d_inner, d_state), and the state the next block starts from; y_t = C_t . read_t.
    Returns y, the last state, every block's start state (what backward recomputes from) and the block
    length."""
    L, block = u.shape[0], _block_length(h0)
    y = u.new_empty(u.shape)
    starts, h = [], h0
    for t0 in range(0, L, block):
        t1 = min(t0 + block, L)
        starts.append(h)
        read, h = block_states(t0, t1, h)
        h = h.clone()  # not a view: the block's buffers are freed
        torch.bmm(read.flatten(0, 1), C[t0:t1].reshape(-1, C.shape[-1], 1), out=y[t0:t1].view(-1, u.shape[-1], 1))
    return y, (h if L else h.clone()), starts, block


def _block_length(h0: Tensor) -> int:
    """Timesteps per block (4 to 128): a block's state tensor fills about SCAN_BLOCK_BYTES."""
    return max(4, min(128, SCAN_BLOCK_BYTES // max(1, h0.numel() * h0.element_size())))


def _block_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Decays and states (block, b, d_inner, d_state) of one block from its start state h."""
    decay = torch.exp(delta.unsqueeze(-1) * A)
    states = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # the drive, overwritten with the states
    for t in range(states.shape[0]):
        h = torch.addcmul(states[t], decay[t], h, out=states[t])
    return decay, states


def _contract_state(x: Tensor, v: Tensor) -> Tensor:
    """sum_s x[..., d, s] * v[..., s] over contiguous x: one batched matrix-vector product."""
    flat = x.reshape(-1, *x.shape[-2:])
    return torch.bmm(flat, v.reshape(-1, x.shape[-1], 1)).view(x.shape[:-1])


def _contract_index(x: Tensor, v: Tensor) -> Tensor:
    """sum_d x[..., d, s] * v[..., d] over contiguous x."""
    flat = x.reshape(-1, *x.shape[-2:])
    return torch.bmm(flat.transpose(1, 2), v.reshape(-1, x.shape[-2], 1)).view(*x.shape[:-2], x.shape[-1])


class _FusedGatedScan(torch.autograd.Function):
    """The gated scan in float32, time-major, built as `_FusedSelectiveScan`: each step forms the ungated
    step of the state, stepped_t = decay_t s_{t-1} + drive_t (what the output reads), and blends it in,
    s_t = lerp(s_{t-1}, stepped_t, g_t), so a closed gate leaves the state bit for bit. The backward
    recomputes a block from its start state and runs two adjoints per step: P_t = dL/d stepped_t =
    G_t + g_t H_t and H_{t-1} = dL/d s_{t-1} = (1 - g_t) H_t + decay_t P_t, with G_t the output's part.
    Arguments: u, delta (L, b, d_inner); A (d_inner, d_state); B, C (L, b, d_state); g (L, b); h0
    (b, d_inner, d_state).
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, g: Tensor,
                h0: Tensor) -> tuple[Tensor, Tensor]:
        def block_states(t0: int, t1: int, h: Tensor) -> tuple[Tensor, Tensor]:
            _, stepped, states = _gated_block_states(u[t0:t1], delta[t0:t1], A, B[t0:t1], g[t0:t1], h)
            return stepped, states[-1]  # the output reads the ungated steps

        y, last, starts, ctx.block = _scan_in_blocks(u, C, h0, block_states)
        ctx.save_for_backward(u, delta, A, B, C, g, *starts)
        return y, last

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor) -> tuple[Tensor, ...]:
        u, delta, A, B, C, g, *starts = ctx.saved_tensors
        L, block = u.shape[0], ctx.block
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_B, grad_C, grad_g = torch.empty_like(B), torch.empty_like(C), torch.empty_like(g)
        grad_A = torch.zeros_like(A)
        running = grad_last.contiguous()
        for index in range(len(starts) - 1, -1, -1):
            t0 = index * block
            t1 = min(t0 + block, L)
            u_b, delta_b, B_b, C_b, g_y = u[t0:t1], delta[t0:t1], B[t0:t1], C[t0:t1], grad_y[t0:t1]
            start, gates = starts[index], g[t0:t1, :, None, None]
            decay, stepped, states = _gated_block_states(u_b, delta_b, A, B_b, g[t0:t1], start)
            grad_C[t0:t1] = _contract_index(stepped, g_y)
            adjoint = g_y.unsqueeze(-1) * C_b.unsqueeze(2)  # G_t, turned into P_t below
            held = torch.empty_like(adjoint)  # H_t
            held[-1] = running
            # per-step views taken once: indexing inside the loop would cost more than the arithmetic
            steps = list(zip(adjoint.unbind(0), held.unbind(0), decay.unbind(0), gates.unbind(0),
                             (1 - gates).unbind(0)))
            befores = [*held.unbind(0)[:-1]]
            befores.insert(0, torch.empty_like(running))
            for (p_t, h_t, decay_t, gate_t, stay_t), before in zip(reversed(steps), reversed(befores)):
                p_t.addcmul_(gate_t, h_t)
                torch.mul(h_t, stay_t, out=before).addcmul_(decay_t, p_t)
            running = befores[0]
            # d s_t / d g_t = stepped_t - s_{t-1}; then the decay's share, dL/d(delta A) = P_t s_{t-1} decay_t
            stepped[1:].sub_(states[:-1])
            stepped[0].sub_(start)
            grad_g[t0:t1] = held.mul_(stepped).sum((2, 3))
            decay[1:].mul_(states[:-1])
            decay[0].mul_(start)
            grad_decay = decay.mul_(adjoint)
            grad_A.add_((grad_decay * delta_b.unsqueeze(-1)).sum((0, 1)))
            grad_delta_b = grad_decay.mul_(A).sum(-1)
            grad_deltau = _contract_state(adjoint, B_b)
            grad_B[t0:t1] = _contract_index(adjoint, delta_b * u_b)
            torch.mul(grad_deltau, delta_b, out=grad_u[t0:t1])
            torch.addcmul(grad_delta_b, grad_deltau, u_b, out=grad_delta[t0:t1])
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_g, running


def _gated_block_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, g: Tensor,
                        h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decays, ungated steps and states (block, b, d_inner, d_state) of one gated block from its start h."""
    decay = torch.exp(delta.unsqueeze(-1) * A)
    stepped = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # the drive, overwritten with the ungated steps
    states = torch.empty_like(stepped)
    for decay_t, stepped_t, state_t, gate_t in zip(decay.unbind(0), stepped.unbind(0), states.unbind(0),
                                                   g[:, :, None, None].unbind(0)):
        stepped_t.addcmul_(decay_t, h)
        h = torch.lerp(h, stepped_t, gate_t, out=state_t)
    return decay, stepped, states


class _NativeGatedScan(torch.autograd.Function):
    """`_FusedGatedScan`'s arguments and results, through the C loops of `smt.native` (CPU, float32):
    the forward keeps each block's start state, the backward recomputes the block and runs the same
    two adjoints, one call each. The C side holds the state and A state-major, (b, d_state, d_inner)."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, g: Tensor,
                h0: Tensor) -> tuple[Tensor, Tensor]:
        A_t = A.t().contiguous()
        y, last, starts, ctx.block = native_scan.gated_scan_forward(u, delta, A_t, B, C, g,
                                                                   h0.transpose(1, 2).contiguous())
        ctx.save_for_backward(u, delta, A_t, B, C, g, starts)
        return y, last.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor) -> tuple[Tensor, ...]:
        u, delta, A_t, B, C, g, starts = ctx.saved_tensors
        grad_u, grad_delta, grad_A, grad_B, grad_C, grad_g, grad_h = native_scan.gated_scan_backward(
            u, delta, A_t, B, C, g, starts, ctx.block, grad_y.contiguous(), grad_last.transpose(1, 2).contiguous())
        return grad_u, grad_delta, grad_A.t(), grad_B, grad_C, grad_g, grad_h.transpose(1, 2)


# torch.compile runs the native calls as they are (a graph break): its tracing tensors have no memory
# for ctypes to read
@torch.compiler.disable
def _native_gated_scan(*args: Tensor) -> tuple[Tensor, Tensor]:
    return _NativeGatedScan.apply(*args)


@torch.compiler.disable
def _native_gated_window(*args: Tensor) -> tuple[Tensor, Tensor]:
    return _NativeGatedWindow.apply(*args)


def _time_major(*xs: Tensor) -> list[Tensor]:
    return [x.transpose(0, 1).contiguous() for x in xs]


def gated_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, g: Tensor,
               h0: Tensor) -> tuple[Tensor, Tensor]:
    """The gated scan of `MambaMixer.forward_gated`, through the implementation `kernels.choose` picks
    for u's device and dtype and the state's size (native C on CPU, Triton on CUDA, the fused PyTorch
    scan, else `gated_scan_reference`):
    s_t = lerp(s_{t-1}, exp(dt_t A) s_{t-1} + dt_t u_t B_t, g_t), each output read from the ungated
    step, y_t = C_t . (exp(dt_t A) s_{t-1} + dt_t u_t B_t) + D u_t. u, delta (batch, L, d_inner); B, C
    (batch, L, d_state); g (batch, L, 1); h0 (batch, d_inner, d_state). Returns y (float32) and the
    last state."""
    return kernels.choose("gated_scan", u, h0.numel()).fn(u, delta, A, B, C, D, g, h0)


def _gated_scan_with(scan):
    """The gated scan through a time-major float32 scan (`_FusedGatedScan`'s arguments and results)."""

    def run(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, g: Tensor,
            h0: Tensor) -> tuple[Tensor, Tensor]:
        u32, delta32 = u.float(), delta.float()
        u_t, delta_t, B_t, C_t, g_t = _time_major(u32, delta32, B.float(), C.float(), g.float().squeeze(-1))
        with torch.autocast(u.device.type, enabled=False):
            y, last = scan(u_t, delta_t, A.float().contiguous(), B_t, C_t, g_t, h0.float().contiguous())
        return y.transpose(0, 1) + u32 * D.float(), last

    return run


def gated_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, g: Tensor,
                         h0: Tensor, keep_states: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """`gated_scan` as two chunked linear scans through autograd, the decay 1 + g (exp(dt A) - 1) and
    the drive g dt B u (the oracle of the fused path); with keep_states also returns every state."""
    decay = torch.exp(delta.float().unsqueeze(-1) * A)  # (B, L, di, ds)
    drive = (delta.float() * u.float()).unsqueeze(-1) * B.float().unsqueeze(2)
    g4 = g.float().unsqueeze(-1)
    states = linear_scan_chunked(1 + g4 * (decay - 1), g4 * drive, h0)
    before = torch.cat([h0.unsqueeze(1), states[:, :-1]], dim=1)
    stepped = decay * before + drive  # each step's ungated state: what its output reads
    y = torch.einsum("blds,bls->bld", stepped, C.float()) + u.float() * D.float()
    return y, states[:, -1], (states if keep_states else None)


def _gated_scan_reference_pair(*args: Tensor) -> tuple[Tensor, Tensor]:
    return gated_scan_reference(*args)[:2]


class _NativeGatedWindow(torch.autograd.Function):
    """`gated_window` through `smt.native`: x (b, L, d_inner), g (b, L), start window e0 (b, K, d_inner),
    all float32 and contiguous; returns the window (b, L, K + 1, d_inner) and the last window. The window
    is also what the backward reads the entries before each step from."""

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
        window, last = native_scan.gated_window_forward(x, g, e0)
        ctx.save_for_backward(g, window)
        return window, last

    @staticmethod
    def backward(ctx, grad_window: Tensor, grad_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g, window = ctx.saved_tensors
        return native_scan.gated_window_backward(g, window, grad_window.contiguous(), grad_last.contiguous())


def gated_window(x: Tensor, g: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    """The gated convolution window of `MambaMixer.forward_gated`: conv_state (b, d_inner, K) holds the
    K = d_conv - 1 inputs before the step; at step t, with gate g_t, entry j becomes
    (1 - g_t) e_j + g_t e_{j+1} (the newest entry: x_t), so a closed gate leaves it bit for bit. x
    (b, L, d_inner), g (b, L, 1). Returns the window each step convolves, (b, L, K + 1, d_inner) float32
    (the entries before the step, then x_t), and the last conv state (b, d_inner, K), through the
    implementation `kernels.choose` picks (the compiled loop of the device: `_NativeGatedWindow` on CPU,
    `triton_scan.TritonGatedWindow` on CUDA; else `gated_window_reference`)."""
    return kernels.choose("gated_window", x).fn(x, g, conv_state)


def _gated_window_with(compiled):
    """The gated window through a compiled loop (`_NativeGatedWindow`'s arguments and results); a window
    of no entries (d_conv 1), which the loops do not take, through the reference."""

    def run(x: Tensor, g: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        if conv_state.shape[-1] == 0:
            return _gated_window_reference_float(x, g, conv_state)
        batch, length, _ = x.shape
        with torch.autocast(x.device.type, enabled=False):
            window, last = compiled(x.float().contiguous(), g.float().reshape(batch, length).contiguous(),
                                    conv_state.float().transpose(1, 2).contiguous())
        return window, last.transpose(1, 2)

    return run


def _gated_window_reference_float(x: Tensor, g: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    return gated_window_reference(x.float(), g.float(), conv_state.float())


def gated_window_reference(x: Tensor, g: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    """`gated_window` as K chunked first-order recurrences through autograd, decay 1 - g, newest entry
    first: entry j after every step is the scan of g times entry j + 1 before every step."""
    stay = (1 - g).expand(-1, -1, x.shape[-1])
    window, source, last = [x], x, []
    for j in range(conv_state.shape[-1] - 1, -1, -1):
        start = conv_state[..., j]
        after = linear_scan_chunked(stay, g * source, start)  # entry j after every step
        source = torch.cat([start.unsqueeze(1), after[:, :-1]], dim=1)  # entry j before every step
        window.insert(0, source)
        last.insert(0, after[:, -1])
    return torch.stack(window, dim=2), (torch.stack(last, dim=-1) if last else conv_state)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan in float32, through the implementation `kernels.choose` picks (the compiled
    gated scan of the device with every gate open, else the fused PyTorch scan; `selective_scan_ref` is
    the reference).

    u, delta: (batch, L, d_inner); A: (d_inner, d_state); B, C: (batch, L, d_state); D: (d_inner,)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t;  y_t = C_t . h_t + D * u_t
    Returns y (batch, L, d_inner) in u's dtype and the last state (batch, d_inner, d_state) float32.
    """
    size = u.shape[0] * u.shape[-1] * A.shape[-1]
    return kernels.choose("selective_scan", u, size).fn(u, delta, A, B, C, D, h0)


def selective_scan_fused(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The scan part of `selective_scan` (no D term) by `_FusedSelectiveScan`, in the inputs' dtype (float32,
    or float64 for gradcheck), (batch, L, ...) layout; returns y (batch, L, d_inner) and the last state."""
    return _scan_part(_FusedSelectiveScan.apply, u, delta, A, B, C, h0)


def _scan_part(scan, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
               h0: Tensor | None) -> tuple[Tensor, Tensor]:
    batch, length, d_inner = u.shape
    if h0 is None:
        h0 = u.new_zeros(batch, d_inner, A.shape[-1])
    time_major = _time_major(u, delta, B, C)
    with torch.autocast(u.device.type, enabled=False):  # the contractions stay float32 too
        y, last = scan(time_major[0], time_major[1], A.contiguous(), time_major[2], time_major[3], h0.contiguous())
    return y.transpose(0, 1), last


def _open_gates(compiled):
    """A compiled gated scan with every gate open: the selective scan (lerp with weight 1 is the step
    itself, bit for bit)."""

    @torch.compiler.disable  # as the compiled scans are: one graph break, not one per nested call
    def scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        return compiled(u, delta, A, B, C, u.new_ones(u.shape[:2]), h0)

    return scan


def _selective_scan_with(scan):
    """`selective_scan` through a time-major scan (`_FusedSelectiveScan`'s arguments and results)."""

    def run(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
            h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        dtype = u.dtype
        u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
        h0 = None if h0 is None else h0.float()
        y, last = _scan_part(scan, u, delta, A.float(), B, C, h0)
        return (y + u * D.float()).to(dtype), last

    return run


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The selective scan written as its definition, one timestep at a time through autograd:
    the oracle `selective_scan`'s fast path is tested against (same arguments and results)."""
    dtype = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    h0 = None if h0 is None else h0.float()
    decay = torch.exp(delta.unsqueeze(-1) * A.float())  # (b, L, di, ds)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (b, L, di, ds)
    states = linear_scan_reference(decay, drive, h0)
    y = torch.einsum("blds,bls->bld", states, C) + u * D.float()
    return y.to(dtype), states[:, -1]


def scan_keeping_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, h0: Tensor | None = None) -> Tensor:
    """Every state of Mamba's scan, (batch, L, d_inner, d_state) float32, by `linear_scan_chunked`
    through autograd (arguments as in `selective_scan`); `selective_scan_ref` forms the same states
    one timestep at a time."""
    decay = torch.exp(delta.float().unsqueeze(-1) * A.float())
    drive = (delta.float() * u.float()).unsqueeze(-1) * B.float().unsqueeze(2)
    return linear_scan_chunked(decay, drive, None if h0 is None else h0.float())


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """States of h_t = a_t * h_{t-1} + b_t (as `linear_scan_reference`), through `kernels.choose`."""
    return kernels.choose("linear_scan", b).fn(a, b, h0)


def _register() -> None:
    """The implementations of the recurrences, in order of preference (see `smt.kernels`)."""
    native = {"devices": ("cpu",), "available": native_scan.loaded}
    triton = {"devices": ("cuda",), "available": triton_scan.installed, "emulated_on_cpu": triton_scan.emulated}
    kernels.define("gated_scan", _gated_scan_reference_pair, "scan-state elements per step (batch x d_inner x "
                   "d_state)", "the memory's scan with a write gate per step (MambaMixer.forward_gated); "
                   "reference: chunked linear scans through autograd")
    kernels.register(Kernel("gated_scan", "native", _gated_scan_with(_native_gated_scan), **native,
                            about="C loop (smt.native), hand-written backward, float32"))
    kernels.register(Kernel("gated_scan", "triton", _gated_scan_with(triton_scan.gated_scan), **triton,
                            about="Triton kernels (triton_scan), hand-written backward, float32"))
    # below 4096 state elements the fused scan's per-step ops cost more than the chunked reference's passes
    # (`python -m benchmarks.ssm --gated`: 0.68-0.93x at 1-2K elements, 2.3-8.3x from 8K up); on a GPU each
    # of its per-step ops is a kernel launch, so the reference runs there
    kernels.register(Kernel("gated_scan", "fused", _gated_scan_with(_FusedGatedScan.apply),
                            min_size={"cpu": 4096, "cuda": math.inf},
                            about="PyTorch ops in cache-sized blocks, hand-written backward, float32"))

    kernels.define("selective_scan", selective_scan_ref, "scan-state elements per step (batch x d_inner x "
                   "d_state)", "Mamba's scan (MambaMixer.forward); reference: one timestep at a time")
    kernels.register(Kernel("selective_scan", "native", _selective_scan_with(_open_gates(_native_gated_scan)),
                            **native, about="the native gated scan with every gate open"))
    kernels.register(Kernel("selective_scan", "triton", _selective_scan_with(_open_gates(triton_scan.gated_scan)),
                            **triton, about="the Triton gated scan with every gate open"))
    kernels.register(Kernel("selective_scan", "fused", _selective_scan_with(_FusedSelectiveScan.apply),
                            about="PyTorch ops in cache-sized blocks, hand-written backward, float32"))

    kernels.define("gated_window", _gated_window_reference_float, "-",
                   "the memory's conv window with a write gate per step; reference: chunked scans")
    kernels.register(Kernel("gated_window", "native", _gated_window_with(_native_gated_window), **native,
                            about="C loop (smt.native), float32"))
    kernels.register(Kernel("gated_window", "triton", _gated_window_with(triton_scan.gated_window), **triton,
                            about="Triton kernels (triton_scan), float32"))

    kernels.define("linear_scan", linear_scan_reference, "-", "h_t = a_t h_{t-1} + b_t (SimpleSSM); reference: "
                   "one timestep at a time")
    kernels.register(Kernel("linear_scan", "chunked", linear_scan_chunked,
                            about="chunks scanned at once, about 2 sqrt(L) sequential steps"))


_register()
