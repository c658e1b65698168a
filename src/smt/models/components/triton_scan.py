"""The gated scan (`scan.gated_scan`) and conv window (`scan.gated_window`) as Triton kernels: the
memory's recurrences on CUDA devices.

On a GPU the fused PyTorch scan would be a few kernel launches per write and per layer, and the
chunked reference materialises several (batch, writes, d_inner, d_state) float32 tensors per layer
(about 200 MB each for the default 216M config at batch 8 and 4K tokens, times 24 layers). Here one
program runs the whole recurrence for one batch row and a block of channels, with the state in
registers: the forward stores each output and the state at every CHUNK-th write; the backward walks
the chunks from the last, recomputes a chunk's states from its stored start into a small scratch
buffer, and runs the two adjoints of `_FusedGatedScan` backwards through it. Sums over channels
(the gradients of B, C and the gates) are written per channel block and added up afterwards, so no
atomics are needed and the result does not depend on scheduling. The conv window's d_conv - 1 gated
recurrences (three chunked scans of a few dozen launches each per layer, through autograd, in PyTorch)
are one loop per program too, forward and backward, as the C loop of `smt.native` does on CPU.

The kernels are turned into Triton kernels on first use: compiled for CUDA tensors, or, with
TRITON_INTERPRET=1 set before Triton is imported, run by Triton's interpreter on CPU tensors, which is
how the tests check them on machines without a GPU (against `gated_scan_reference` and
`gated_window_reference`, values and gradients). Triton is optional: without it the chunked PyTorch
references run on CUDA.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch
from torch import Tensor

tl = None  # triton.language, imported on first use: the kernels read it as a module global

CHUNK = 16  # writes between stored states: the backward recomputes at most this many per chunk


def available(x: Tensor) -> bool:
    """Whether the Triton scan can run on x: a CUDA tensor and Triton installed."""
    return x.is_cuda and installed()


@torch.compiler.assume_constant_result
def installed() -> bool:  # a constant to torch.compile
    """Whether Triton is installed."""
    return _find_triton()


def emulated() -> bool:
    """Whether the kernels can run CPU tensors here: Triton installed and its interpreter on."""
    return _find_triton() and _interpreting()


@lru_cache(maxsize=1)
def _find_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def _scan_forward_kernel(u, delta, A, B, C, g, h0, y, last, starts, length, batch, d_inner, d_state,
                         BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK: tl.constexpr):
    row, block = tl.program_id(0), tl.program_id(1)
    channels = block * BLOCK_D + tl.arange(0, BLOCK_D)
    states = tl.arange(0, BLOCK_S)
    channel_ok, state_ok = channels < d_inner, states < d_state
    tile_ok = channel_ok[:, None] & state_ok[None, :]
    tile = channels[:, None] * d_state + states[None, :]  # offsets into a (d_inner, d_state) matrix
    a = tl.load(A + tile, mask=tile_ok, other=0.0)  # padded states decay by exp(0) = 1 and stay 0
    h = tl.load(h0 + row * d_inner * d_state + tile, mask=tile_ok, other=0.0)
    for chunk in range(0, (length + CHUNK - 1) // CHUNK):
        tl.store(starts + (chunk * batch + row) * d_inner * d_state + tile, h, mask=tile_ok)
        for t in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, length)):
            at = t * batch + row
            u_t = tl.load(u + at * d_inner + channels, mask=channel_ok, other=0.0)
            dt_t = tl.load(delta + at * d_inner + channels, mask=channel_ok, other=0.0)
            B_t = tl.load(B + at * d_state + states, mask=state_ok, other=0.0)
            C_t = tl.load(C + at * d_state + states, mask=state_ok, other=0.0)
            g_t = tl.load(g + at)
            stepped = tl.exp(dt_t[:, None] * a) * h + (dt_t * u_t)[:, None] * B_t[None, :]
            tl.store(y + at * d_inner + channels, tl.sum(stepped * C_t[None, :], axis=1), mask=channel_ok)
            # torch.lerp's two formulas: a closed gate keeps h and an open one takes stepped, bit for bit
            change = stepped - h
            h = tl.where(g_t < 0.5, h + g_t * change, stepped - (1.0 - g_t) * change)
    tl.store(last + row * d_inner * d_state + tile, h, mask=tile_ok)


def _scan_backward_kernel(u, delta, A, B, C, g, starts, grad_y, grad_last, scratch, grad_u, grad_delta,
                          grad_A, grad_B, grad_C, grad_g, grad_h0, length, batch, d_inner, d_state,
                          BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK: tl.constexpr):
    row, block = tl.program_id(0), tl.program_id(1)
    channels = block * BLOCK_D + tl.arange(0, BLOCK_D)
    states = tl.arange(0, BLOCK_S)
    channel_ok, state_ok = channels < d_inner, states < d_state
    tile_ok = channel_ok[:, None] & state_ok[None, :]
    tile = channels[:, None] * d_state + states[None, :]
    matrix = d_inner * d_state
    a = tl.load(A + tile, mask=tile_ok, other=0.0)
    held = tl.load(grad_last + row * matrix + tile, mask=tile_ok, other=0.0)  # dL/d s_t, from the end
    grad_a = tl.full((BLOCK_D, BLOCK_S), 0.0, tl.float32)
    mine = scratch + row * CHUNK * matrix  # this row's CHUNK states before each step
    n_chunks = (length + CHUNK - 1) // CHUNK
    for back in range(0, n_chunks):
        chunk = n_chunks - 1 - back
        t0 = chunk * CHUNK
        steps = tl.minimum(CHUNK, length - t0)
        h = tl.load(starts + (chunk * batch + row) * matrix + tile, mask=tile_ok, other=0.0)
        for i in range(0, steps):  # recompute the chunk: the state before each of its steps
            at = (t0 + i) * batch + row
            tl.store(mine + i * matrix + tile, h, mask=tile_ok)
            u_t = tl.load(u + at * d_inner + channels, mask=channel_ok, other=0.0)
            dt_t = tl.load(delta + at * d_inner + channels, mask=channel_ok, other=0.0)
            B_t = tl.load(B + at * d_state + states, mask=state_ok, other=0.0)
            g_t = tl.load(g + at)
            stepped = tl.exp(dt_t[:, None] * a) * h + (dt_t * u_t)[:, None] * B_t[None, :]
            change = stepped - h
            h = tl.where(g_t < 0.5, h + g_t * change, stepped - (1.0 - g_t) * change)
        tl.debug_barrier()  # the scratch is read below by other threads than those that wrote it
        for j in range(0, steps):  # the adjoints, last step first
            i = steps - 1 - j
            t = t0 + i
            at = t * batch + row
            before = tl.load(mine + i * matrix + tile, mask=tile_ok, other=0.0)
            u_t = tl.load(u + at * d_inner + channels, mask=channel_ok, other=0.0)
            dt_t = tl.load(delta + at * d_inner + channels, mask=channel_ok, other=0.0)
            B_t = tl.load(B + at * d_state + states, mask=state_ok, other=0.0)
            C_t = tl.load(C + at * d_state + states, mask=state_ok, other=0.0)
            g_t = tl.load(g + at)
            gy_t = tl.load(grad_y + at * d_inner + channels, mask=channel_ok, other=0.0)
            decay = tl.exp(dt_t[:, None] * a)
            dtu = dt_t * u_t
            stepped = decay * before + dtu[:, None] * B_t[None, :]
            # P_t = dL/d stepped_t = G_t + g_t H_t; H_{t-1} = (1 - g_t) H_t + decay_t P_t
            pushed = gy_t[:, None] * C_t[None, :] + g_t * held
            partial = (block * length + t) * batch + row  # this channel block's share of a sum over channels
            tl.store(grad_C + partial * d_state + states, tl.sum(gy_t[:, None] * stepped, axis=0), mask=state_ok)
            tl.store(grad_g + partial, tl.sum(tl.sum(held * (stepped - before), axis=1), axis=0))
            tl.store(grad_B + partial * d_state + states, tl.sum(pushed * dtu[:, None], axis=0), mask=state_ok)
            grad_decay = pushed * before * decay  # dL/d(dt A)
            grad_a += dt_t[:, None] * grad_decay
            grad_dtu = tl.sum(pushed * B_t[None, :], axis=1)
            tl.store(grad_u + at * d_inner + channels, grad_dtu * dt_t, mask=channel_ok)
            tl.store(grad_delta + at * d_inner + channels, tl.sum(grad_decay * a, axis=1) + grad_dtu * u_t,
                     mask=channel_ok)
            held = (1.0 - g_t) * held + decay * pushed
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(grad_h0 + row * matrix + tile, held, mask=tile_ok)
    tl.store(grad_A + row * matrix + tile, grad_a, mask=tile_ok)


def _window_forward_kernel(x, g, e0, window, last, length, width, K,
                           BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    row, block = tl.program_id(0), tl.program_id(1)
    channels = block * BLOCK_D + tl.arange(0, BLOCK_D)
    entries = tl.arange(0, BLOCK_K)
    channel_ok = channels < width
    tile_ok = (entries[:, None] < K) & channel_ok[None, :]
    tile = entries[:, None] * width + channels[None, :]  # entry j of a (K or K + 1, width) window
    current = tl.load(e0 + row * K * width + tile, mask=tile_ok, other=0.0)
    for t in range(0, length):
        at = row * length + t
        step = window + at * (K + 1) * width  # the window step t convolves: the entries, then x_t
        tl.store(step + tile, current, mask=tile_ok)
        tl.store(step + K * width + channels, tl.load(x + at * width + channels, mask=channel_ok), mask=channel_ok)
        tl.debug_barrier()  # entry j + 1 is read below by other threads than those that wrote it
        newer = tl.load(step + width + tile, mask=tile_ok, other=0.0)
        g_t = tl.load(g + at)
        current = (1.0 - g_t) * current + g_t * newer
    tl.store(last + row * K * width + tile, current, mask=tile_ok)


def _window_backward_kernel(g, window, grad_window, grad_last, scratch, grad_x, grad_g, grad_e0, length, batch,
                            width, K, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    row, block = tl.program_id(0), tl.program_id(1)
    channels = block * BLOCK_D + tl.arange(0, BLOCK_D)
    entries = tl.arange(0, BLOCK_K)
    channel_ok = channels < width
    tile_ok = (entries[:, None] < K) & channel_ok[None, :]
    tile = entries[:, None] * width + channels[None, :]
    held = tl.load(grad_last + row * K * width + tile, mask=tile_ok, other=0.0)  # dL/d entries after the step
    shifted = scratch + row * (K + 1) * width  # row 0 stays zero: entry j's adjoint lands in row j + 1
    for back in range(0, length):
        t = length - 1 - back
        at = row * length + t
        step = window + at * (K + 1) * width
        before = tl.load(step + tile, mask=tile_ok, other=0.0)
        newer = tl.load(step + width + tile, mask=tile_ok, other=0.0)
        g_t = tl.load(g + at)
        tl.store(grad_g + (block * batch + row) * length + t, tl.sum(tl.sum(held * (newer - before), axis=1), axis=0))
        tl.store(shifted + width + tile, held, mask=tile_ok)
        tl.debug_barrier()
        below = tl.load(shifted + tile, mask=tile_ok, other=0.0)  # entry j - 1's adjoint (0 for entry 0)
        newest = tl.load(shifted + K * width + channels, mask=channel_ok, other=0.0)  # entry K - 1's
        tl.debug_barrier()  # the next step overwrites the scratch
        grad_step = grad_window + at * (K + 1) * width
        tl.store(grad_x + at * width + channels,
                 tl.load(grad_step + K * width + channels, mask=channel_ok, other=0.0) + g_t * newest, mask=channel_ok)
        held = tl.load(grad_step + tile, mask=tile_ok, other=0.0) + (1.0 - g_t) * held + g_t * below
    tl.store(grad_e0 + row * K * width + tile, held, mask=tile_ok)


@lru_cache(maxsize=1)
def _kernels():
    global tl
    import triton
    import triton.language

    tl = triton.language
    return {name: triton.jit(kernel) for name, kernel in (
        ("scan_forward", _scan_forward_kernel), ("scan_backward", _scan_backward_kernel),
        ("window_forward", _window_forward_kernel), ("window_backward", _window_backward_kernel))}


def _kernels_for(x: Tensor) -> dict:
    """The kernels by name: compiled for CUDA tensors; for CPU tensors, Triton's interpreter, which needs
    TRITON_INTERPRET=1 before Triton is first imported (the tests' conftest sets it without a GPU)."""
    if not x.is_cuda and not _interpreting():
        raise RuntimeError("the Triton gated scan got CPU tensors: it runs on CUDA, or on CPU under Triton's "
                           "interpreter (set TRITON_INTERPRET=1 before anything imports triton); on CPU use "
                           "scan.gated_scan and scan.gated_window, which take the native or PyTorch paths")
    return _kernels()


def _interpreting() -> bool:
    try:
        from triton import knobs
    except ImportError:  # Triton before 3.4
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def _launch_shape(u: Tensor, d_state: int) -> tuple[int, int, tuple[int, int]]:
    import triton

    length, batch, d_inner = u.shape
    block_s = triton.next_power_of_2(d_state)
    block_d = max(1, min(triton.next_power_of_2(d_inner), 4096 // block_s, 64))
    return block_d, block_s, (batch, triton.cdiv(d_inner, block_d))


class TritonGatedScan(torch.autograd.Function):
    """`_FusedGatedScan`'s arguments and results (float32, time-major: u, delta (L, b, d_inner); A
    (d_inner, d_state); B, C (L, b, d_state); g (L, b); h0 (b, d_inner, d_state)), through the Triton
    kernels."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, g: Tensor,
                h0: Tensor) -> tuple[Tensor, Tensor]:
        u, delta, A, B, C, g, h0 = (x.contiguous() for x in (u, delta, A, B, C, g, h0))
        length, batch, d_inner = u.shape
        d_state = A.shape[1]
        block_d, block_s, grid = _launch_shape(u, d_state)
        y, last = torch.empty_like(u), torch.empty_like(h0)
        starts = u.new_empty(-(-length // CHUNK), batch, d_inner, d_state)
        _kernels_for(u)["scan_forward"][grid](u, delta, A, B, C, g, h0, y, last, starts, length, batch, d_inner,
                                              d_state, BLOCK_D=block_d, BLOCK_S=block_s, CHUNK=CHUNK)
        ctx.save_for_backward(u, delta, A, B, C, g, starts)
        return y, last

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_last: Tensor) -> tuple[Tensor, ...]:
        u, delta, A, B, C, g, starts = ctx.saved_tensors
        length, batch, d_inner = u.shape
        d_state = A.shape[1]
        block_d, block_s, grid = _launch_shape(u, d_state)
        n_blocks = grid[1]
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_A = u.new_empty(batch, d_inner, d_state)
        grad_B = u.new_empty(n_blocks, length, batch, d_state)
        grad_C = u.new_empty(n_blocks, length, batch, d_state)
        grad_g = u.new_empty(n_blocks, length, batch)
        grad_h0 = u.new_empty(batch, d_inner, d_state)
        scratch = u.new_empty(batch, CHUNK, d_inner, d_state)
        _kernels_for(u)["scan_backward"][grid](
            u, delta, A, B, C, g, starts, grad_y.contiguous(), grad_last.contiguous(), scratch, grad_u, grad_delta,
            grad_A, grad_B, grad_C, grad_g, grad_h0, length, batch, d_inner, d_state,
            BLOCK_D=block_d, BLOCK_S=block_s, CHUNK=CHUNK)
        return grad_u, grad_delta, grad_A.sum(0), grad_B.sum(0), grad_C.sum(0), grad_g.sum(0), grad_h0


def _window_launch_shape(x: Tensor, K: int) -> tuple[int, int, tuple[int, int]]:
    import triton

    batch, _, width = x.shape
    block_d = min(triton.next_power_of_2(width), 256)
    return triton.next_power_of_2(K), block_d, (batch, triton.cdiv(width, block_d))


class TritonGatedWindow(torch.autograd.Function):
    """`scan._NativeGatedWindow`'s arguments and results (x (b, L, d_inner), g (b, L), the start window e0
    (b, K, d_inner), float32; returns the window (b, L, K + 1, d_inner) and the last window) through the
    Triton kernels: one program per row and block of channels walks the steps, and the entry after each
    one is read back from the window it has just written (a register tile cannot be shifted by a row)."""

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, e0: Tensor) -> tuple[Tensor, Tensor]:
        x, g, e0 = x.contiguous(), g.contiguous(), e0.contiguous()
        batch, length, width = x.shape
        K = e0.shape[1]
        block_k, block_d, grid = _window_launch_shape(x, K)
        window, last = x.new_empty(batch, length, K + 1, width), torch.empty_like(e0)
        _kernels_for(x)["window_forward"][grid](x, g, e0, window, last, length, width, K,
                                                BLOCK_K=block_k, BLOCK_D=block_d)
        ctx.save_for_backward(g, window)
        return window, last

    @staticmethod
    def backward(ctx, grad_window: Tensor, grad_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g, window = ctx.saved_tensors
        batch, length, K1, width = window.shape
        K = K1 - 1
        block_k, block_d, grid = _window_launch_shape(window[:, :, 0], K)
        scratch = window.new_zeros(batch, K + 1, width)
        grad_x, grad_e0 = window.new_empty(batch, length, width), window.new_empty(batch, K, width)
        grad_g = window.new_empty(grid[1], batch, length)
        _kernels_for(window)["window_backward"][grid](
            g, window, grad_window.contiguous(), grad_last.contiguous(), scratch, grad_x, grad_g, grad_e0, length,
            batch, width, K, BLOCK_K=block_k, BLOCK_D=block_d)
        return grad_x, grad_g.sum(0), grad_e0


# torch.compile runs the kernels as they are (a graph break), as it does the native C loops
@torch.compiler.disable
def gated_scan(*args: Tensor) -> tuple[Tensor, Tensor]:
    """`TritonGatedScan.apply`, outside torch.compile's tracing."""
    return TritonGatedScan.apply(*args)


@torch.compiler.disable
def gated_window(*args: Tensor) -> tuple[Tensor, Tensor]:
    """`TritonGatedWindow.apply`, outside torch.compile's tracing."""
    return TritonGatedWindow.apply(*args)
