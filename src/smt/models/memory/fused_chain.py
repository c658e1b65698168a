"""The write chain over a Mamba memory as one autograd Function with a hand-written backward.

Same maths as the loop in `write_chain` (pool the window, step every Mamba layer, project the
new slot), but nothing is recorded per write: the forward runs without autograd and keeps the
few vectors each write needs, and the backward runs the chain in reverse by hand. Per write,
only what is truly sequential stays in the loop (the memory half of the softmax, the layer
steps and their adjoints); everything else is done once for all writes:
  - the token half of every window (its max, normaliser and weighted value sum) before the
    loop, and its gradient after it;
  - every weight gradient: one matrix product over all writes instead of one outer product
    per write and layer; RMSNorm weights are folded into the matrix that follows them.
Float32 throughout, whatever autocast says (float64 for float64 inputs): at the batch sizes where
this chain matters its matrix-vector products cost the same in either dtype, and the state stays
exact. Chains of fewer than `write_chain.FUSED_MIN_WRITES` writes take the loop instead.

`write_chain` (the autograd loop) is the reference this is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_silu_backward = torch.ops.aten.silu_backward
_silu_backward_into = torch.ops.aten.silu_backward.grad_input
_softplus_backward = torch.ops.aten.softplus_backward
_layer_norm_backward = torch.ops.aten.native_layer_norm_backward


class PoolWeights(NamedTuple):
    """The chain's weights outside the Mamba layers, in the order `_FusedWriteChain` takes them."""

    norm_w: Tensor  # pooling LayerNorm
    norm_b: Tensor
    query: Tensor  # (heads, d_head)
    key_w: Tensor
    value_w: Tensor
    out_w: Tensor  # pooling output projection
    norm_f_w: Tensor  # the memory stack's final RMSNorm
    mem_w: Tensor  # memory_proj: SSM output -> slot


class LayerWeights(NamedTuple):
    """One Mamba layer's weights, in the order `_FusedWriteChain` takes them."""

    norm_w: Tensor  # the layer's RMSNorm
    in_proj: Tensor
    conv_w: Tensor
    conv_b: Tensor
    x_proj: Tensor
    dt_w: Tensor
    dt_b: Tensor
    A_log: Tensor
    D: Tensor
    out_proj: Tensor


N_POOL_PARAMS = len(PoolWeights._fields)
N_LAYER_PARAMS = len(LayerWeights._fields)


def chain_weights(pooling: nn.Module, ssm: nn.Module, memory_proj: nn.Linear) -> tuple[PoolWeights, list[LayerWeights]]:
    """The chain's weights, named; the one place that knows where each lives in the modules."""
    pool = PoolWeights(pooling.norm.weight, pooling.norm.bias, pooling.query, pooling.key.weight,
                       pooling.value.weight, pooling.out.weight, ssm.norm_f.weight, memory_proj.weight)
    layers = [LayerWeights(layer.norm.weight, layer.mixer.in_proj.weight, layer.mixer.conv1d.weight,
                           layer.mixer.conv1d.bias, layer.mixer.x_proj.weight, layer.mixer.dt_proj.weight,
                           layer.mixer.dt_proj.bias, layer.mixer.A_log, layer.mixer.D, layer.mixer.out_proj.weight)
              for layer in ssm.layers]
    return pool, layers


def _named(flat: list[Tensor]) -> tuple[PoolWeights, list[LayerWeights]]:
    """The flat tensor list autograd hands over, named again (inverse of flattening chain_weights)."""
    pool = PoolWeights(*flat[:N_POOL_PARAMS])
    rest = flat[N_POOL_PARAMS:]
    return pool, [LayerWeights(*rest[i:i + N_LAYER_PARAMS]) for i in range(0, len(rest), N_LAYER_PARAMS)]


@dataclass(frozen=True)
class _Shape:
    n_slots: int
    heads: int
    d_state: int
    dt_rank: int
    n_layers: int
    norm_eps: float
    pool_eps: float
    has_offsets: bool


class _Layer:
    """One Mamba layer's weights in the compute dtype, in the layouts the loops multiply with."""

    def __init__(self, weights: LayerWeights) -> None:
        norm, in_proj, conv_w, self.conv_b, x_proj, dt_w, self.dt_b, A_log, self.D, out_proj = weights
        d_inner = in_proj.shape[0] // 2
        self.norm, self.in_proj = norm, in_proj
        self.in_x, self.in_z = (in_proj * norm).split(d_inner)  # RMSNorm weight folded in
        self.in_x_t, self.in_z_t = self.in_x.t().contiguous(), self.in_z.t().contiguous()
        self.conv_w = conv_w.squeeze(1).t().unsqueeze(1).contiguous()  # (d_conv, 1, d_inner), oldest first
        self.conv_w_rev = self.conv_w.flip(0)
        self.x_proj, self.x_proj_t = x_proj, x_proj.t().contiguous()
        self.dt_w, self.dt_w_t = dt_w, dt_w.t().contiguous()
        self.A = -torch.exp(A_log)
        self.out_proj, self.out_proj_t = out_proj, out_proj.t().contiguous()


class _StepRecord(NamedTuple):
    """What one layer step keeps for its backward."""

    h: Tensor  # the layer's input (its residual stream)
    z: Tensor
    c: Tensor  # conv output before SiLU
    u: Tensor
    xp: Tensor  # [dt_low, B, C]
    dpre: Tensor  # dt before softplus
    delta: Tensor
    scan: Tensor  # the SSM state before this step (its decay is recomputed: half the memory)
    y: Tensor
    sz: Tensor  # SiLU(z)
    yg: Tensor


class _StepGrads(NamedTuple):
    """What one layer step's backward keeps for the weight gradients."""

    out: Tensor  # d loss / d layer output
    x: Tensor
    z: Tensor
    xp: Tensor
    dpre: Tensor
    y: Tensor


# mean() over a row costs several times sum() here; these run once per write and layer
def _rms_backward(grad: Tensor, normed: Tensor, rstd: Tensor) -> Tensor:
    """Gradient wrt h of normed = h * rstd, rstd = (mean(h^2) + eps)^-1/2."""
    mean = (grad * normed).sum(-1, keepdim=True).mul_(1 / normed.shape[-1])
    return rstd * (grad - normed * mean)


def _rms_parts(h: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    rstd = torch.rsqrt((h * h).sum(-1, keepdim=True).mul_(1 / h.shape[-1]).add_(eps))
    return h * rstd, rstd


def _layer_step(layer: _Layer, h: Tensor, history: Tensor, k: int, scan: Tensor, split: list[int],
                eps: float) -> tuple[Tensor, Tensor, _StepRecord]:
    """One Mamba layer at write k: h (B, d), the SSM state -> the layer output, the new state, and what
    the backward needs; writes the conv input x_in into history[k + d_conv - 1]."""
    dc = layer.conv_w.shape[0]
    hn = _rms_parts(h, eps)[0]
    torch.mm(hn, layer.in_x_t, out=history[k + dc - 1])
    z = hn @ layer.in_z_t
    c = (history[k:k + dc] * layer.conv_w).sum(0).add_(layer.conv_b)
    u = F.silu(c)
    xp = u @ layer.x_proj_t
    dt_low, Bm, Cm = xp.split(split, dim=-1)
    dpre = torch.addmm(layer.dt_b, dt_low, layer.dt_w_t)
    delta = F.softplus(dpre)
    decay = torch.exp(delta.unsqueeze(-1) * layer.A)
    state = torch.baddbmm(decay * scan, (delta * u).unsqueeze(-1), Bm.unsqueeze(1))
    y = torch.baddbmm((u * layer.D).unsqueeze(-1), state, Cm.unsqueeze(-1)).squeeze(-1)
    sz = F.silu(z)
    yg = y * sz
    record = _StepRecord(h, z, c, u, xp, dpre, delta, scan, y, sz, yg)
    return torch.addmm(h, yg, layer.out_proj_t), state, record


def _layer_step_backward(layer: _Layer, rec: _StepRecord, scan_after: Tensor, g_h: Tensor, g_scan: Tensor,
                         g_conv: Tensor, g_history: Tensor | None, k: int, normed: Tensor, rstd: Tensor,
                         g_A: Tensor, split: list[int]) -> tuple[Tensor, Tensor, _StepGrads]:
    """The adjoint of `_layer_step`: g_h (d loss / d output) and g_scan (/ d state after the step) ->
    d loss / d input, / d state before. Writes the conv output's gradient into g_conv[k + dc - 1] and
    accumulates the per-row gradient of A into g_A; g_history: outside gradient of this write's x_in."""
    dc = layer.conv_w.shape[0]
    u, delta = rec.u, rec.delta
    decay = torch.exp(delta.unsqueeze(-1) * layer.A)
    _, Bm, Cm = rec.xp.split(split, dim=-1)
    g_yg = g_h @ layer.out_proj
    g_y = g_yg * rec.sz
    g_z = _silu_backward(g_yg * rec.y, rec.z)
    g_state = torch.baddbmm(g_scan, g_y.unsqueeze(-1), Cm.unsqueeze(1))
    g_C = torch.bmm(g_y.unsqueeze(1), scan_after).squeeze(1)
    g_decay = g_state * rec.scan * decay
    g_A.addcmul_(g_decay, delta.unsqueeze(-1))
    g_delta = g_decay.mul_(layer.A).sum(-1)
    g_B = torch.bmm((delta * u).unsqueeze(1), g_state).squeeze(1)
    g_du = torch.bmm(g_state, Bm.unsqueeze(-1)).squeeze(-1)
    g_delta.addcmul_(g_du, u)
    g_u = torch.addcmul(g_y * layer.D, g_du, delta)
    g_scan_before = g_state.mul_(decay)
    g_dpre = _softplus_backward(g_delta, rec.dpre, 1.0, 20.0)
    g_xp = torch.cat([g_dpre @ layer.dt_w, g_B, g_C], dim=-1)
    g_u = torch.addmm(g_u, g_xp, layer.x_proj)
    _silu_backward_into(g_u, rec.c, grad_input=g_conv[k + dc - 1])
    g_x = (g_conv[k + dc - 1:k + 2 * dc - 1] * layer.conv_w_rev).sum(0)
    if g_history is not None:
        g_x += g_history
    g_hn = torch.addmm(g_x @ layer.in_x, g_z, layer.in_z)
    g_in = g_h + _rms_backward(g_hn, normed, rstd)
    return g_in, g_scan_before, _StepGrads(g_h, g_x, g_z, g_xp, g_dpre, g_y)


class _FusedWriteChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shape: _Shape, window: Tensor, token_valid: Tensor, slot_valid: Tensor,
                token_scores: Tensor, token_values: Tensor, slot_scores: Tensor, slot_values: Tensor,
                conv0: Tensor, scan0: Tensor, offsets: Tensor, *params: Tensor):
        N, H, R, S, eps = shape.n_slots, shape.heads, shape.dt_rank, shape.d_state, shape.norm_eps
        B, _, d = token_values.shape
        W, dh = window.shape[0], d // H
        # float32 (float64 only for float64 inputs, so gradcheck can check this in double precision)
        cd = torch.float64 if token_values.dtype == torch.float64 else torch.float32
        cparams = [p.to(cd) for p in params]
        pool, layer_weights = _named(cparams)
        pool_norm_w, pool_norm_b, query, key_w, value_w, pool_out_w, norm_f_w, mem_w = pool
        layers = [_Layer(weights) for weights in layer_weights]
        dc = layers[0].conv_w.shape[0]
        # a vector's pooling score is LN(v) @ q_eff: the learned query folded into the key projection
        q_eff = torch.einsum("hed,he->dh", key_w.view(H, dh, d), query) / math.sqrt(dh)
        proj_w = torch.cat([q_eff, value_w.t()], dim=1)  # (d, H + d): scores then values
        pool_out_t = pool_out_w.t().contiguous()
        mem_t = (mem_w * norm_f_w).t().contiguous()

        # the token half of every window, for all writes at once
        win_scores = token_scores.to(cd)[:, window].masked_fill(~token_valid[:, window, None], float("-inf"))
        tok_max = win_scores.amax(2)  # (B, W, H)
        tok_exp = torch.exp(win_scores - tok_max[:, :, None])  # (B, W, M, H)
        win_values = token_values.to(cd)[:, window].view(B, W, -1, H, dh)
        tok_sum = (tok_exp.unsqueeze(-1) * win_values).sum(2)  # (B, W, H, dh)
        tok_max, tok_norm, tok_sum = (t.transpose(0, 1).contiguous() for t in (tok_max, tok_exp.sum(2), tok_sum))

        # time-major buffers: the memory ring (rows 0..N-1 the slots before this call, row N + k the
        # slot of write k, as [scores, values]) and every layer's conv input history
        ring = token_values.new_zeros(N + W, B, H + d, dtype=cd)
        ring[:N, :, :H] = slot_scores.to(cd).masked_fill(~slot_valid[..., None], float("-inf")).transpose(0, 1)
        ring[:N, :, H:] = slot_values.to(cd).transpose(0, 1)
        conv_in = [token_values.new_empty(W + dc - 1, B, layers[0].in_x.shape[0], dtype=cd)
                   for _ in layers]
        for i, x in enumerate(conv_in):
            x[:dc - 1] = conv0[:, i].to(cd).permute(2, 0, 1)
        scan = [scan0[:, i].to(cd) for i in range(shape.n_layers)]
        offsets = offsets.to(cd)
        pool_keep = {name: [] for name in ("w_mem", "tok_scale", "ph", "h_final", "slot", "ln_mean", "ln_rstd")}
        records: list[list[_StepRecord]] = [[] for _ in layers]
        split = [R, S, S]
        for k in range(W):
            mem = ring[k:k + N]
            mem_scores, mem_values = mem[..., :H], mem[..., H:].view(N, B, H, dh)
            top = torch.maximum(tok_max[k], mem_scores.amax(0))
            mem_exp = torch.exp(mem_scores - top)
            tok_factor = torch.exp(tok_max[k] - top)
            inv_norm = (tok_norm[k] * tok_factor + mem_exp.sum(0)).reciprocal_()
            w_mem = mem_exp.mul_(inv_norm)
            tok_scale = tok_factor.mul_(inv_norm)
            ph = torch.addcmul((w_mem.unsqueeze(-1) * mem_values).sum(0), tok_sum[k], tok_scale.unsqueeze(-1))
            ph = ph.view(B, d)
            h = ph @ pool_out_t
            pool_keep["w_mem"].append(w_mem)
            pool_keep["tok_scale"].append(tok_scale)
            pool_keep["ph"].append(ph)
            for i, layer in enumerate(layers):
                h, scan[i], record = _layer_step(layer, h, conv_in[i], k, scan[i], split, eps)
                records[i].append(record)
            fn = _rms_parts(h, eps)[0]
            slot = torch.addmm(offsets[:, k], fn, mem_t) if shape.has_offsets else fn @ mem_t
            ln, ln_mean, ln_rstd = torch.native_layer_norm(slot, (d,), pool_norm_w, pool_norm_b, shape.pool_eps)
            torch.mm(ln, proj_w, out=ring[N + k])
            for name, value in (("h_final", h), ("slot", slot), ("ln_mean", ln_mean), ("ln_rstd", ln_rstd)):
                pool_keep[name].append(value)

        w_mem = torch.stack(pool_keep["w_mem"])  # (W, N, B, H)
        tok_scale = torch.stack(pool_keep["tok_scale"]).transpose(0, 1)  # (B, W, H)
        tok_weights = tok_exp * tok_scale[:, :, None]  # (B, W, M, H)
        weights = torch.cat([w_mem.permute(2, 0, 3, 1), tok_weights.permute(0, 1, 3, 2)], dim=-1)
        final_ring = ring[W:].transpose(0, 1)
        ctx.shape, ctx.dims, ctx.token_len = shape, (B, W, d, dh), token_values.shape[1]
        ctx.pool_keep, ctx.records, ctx.layers, ctx.conv_in = pool_keep, records, layers, conv_in
        ctx.final_scan = scan
        ctx.tok_weights, ctx.win_values, ctx.ring = tok_weights, win_values, ring
        ctx.cparams, ctx.proj_w = cparams, proj_w
        ctx.input_dtypes = [t.dtype for t in (token_scores, token_values, slot_scores, slot_values, conv0, scan0,
                                              offsets)] + [p.dtype for p in params]
        ctx.save_for_backward(window)
        final_conv = torch.stack([x[W:].permute(1, 2, 0) for x in conv_in], 1)
        return (torch.stack(pool_keep["slot"], 1).to(token_values.dtype), weights, final_ring[..., :H].contiguous(),
                final_ring[..., H:].to(slot_values.dtype).contiguous(), final_conv, torch.stack(scan, 1))

    @staticmethod
    def backward(ctx, g_slots, g_weights, g_final_scores, g_final_values, g_conv, g_scan):
        shape, (B, W, d, dh) = ctx.shape, ctx.dims
        (window,) = ctx.saved_tensors
        N, H, R, S, eps = shape.n_slots, shape.heads, shape.dt_rank, shape.d_state, shape.norm_eps
        keep, layers = ctx.pool_keep, ctx.layers
        pool = _named(ctx.cparams)[0]
        pool_norm_w, pool_out_w, norm_f_w, mem_w = pool.norm_w, pool.out_w, pool.norm_f_w, pool.mem_w
        dc = layers[0].conv_w.shape[0]
        cd = ctx.ring.dtype
        g_slots, g_weights = g_slots.to(cd), g_weights.to(cd)
        g_ring = ctx.ring.new_zeros(N + W, B, H + d)
        g_ring[W:, :, :H] = g_final_scores.to(cd).transpose(0, 1)
        g_ring[W:, :, H:] = g_final_values.to(cd).transpose(0, 1)
        g_mem_weights = g_weights[..., :N].permute(1, 3, 0, 2)  # (W, N, B, H)
        g_tok_weights = g_weights[..., N:].permute(0, 1, 3, 2)  # (B, W, M, H)
        # the weights' own gradient enters the softmax backward through sum_j w_j * g_w_j
        ext_dot = ((g_mem_weights * torch.stack(keep["w_mem"])).sum(1) +
                   (g_tok_weights * ctx.tok_weights).sum(2).transpose(0, 1))  # (W, B, H)
        g_scan_carry = [g_scan[:, i].to(cd) for i in range(shape.n_layers)]
        # conv gradients, time-major with d_conv - 1 zero rows each side: row k + dc - 1 is write k
        g_conv_pre = [ctx.ring.new_zeros(W + 2 * (dc - 1), B, layer.in_x.shape[0]) for layer in layers]
        # gradients reaching the conv history from outside: the final conv state's
        g_hist_ext = [ctx.ring.new_zeros(W + dc - 1, B, layer.in_x.shape[0]) for layer in layers]
        for i, g in enumerate(g_hist_ext):
            g[W:] = g_conv[:, i].to(cd).permute(2, 0, 1)
        g_A = [g_ring.new_zeros(B, *layer.A.shape) for layer in layers]
        rms = [_rms_parts(torch.stack([r.h for r in recs]), eps) for recs in ctx.records]
        f_normed, f_rstd = _rms_parts(torch.stack(keep["h_final"]), eps)
        mem_g = mem_w * norm_f_w
        proj_w_t = ctx.proj_w.t().contiguous()
        grads: dict[str, list] = {name: [] for name in ("proj", "ln", "slot", "pooled", "ph", "dot")}
        layer_grads: list[list[_StepGrads]] = [[] for _ in layers]
        split = [R, S, S]
        for k in range(W - 1, -1, -1):
            g_proj = g_ring[N + k]
            g_ln = g_proj @ proj_w_t
            g_slot = _layer_norm_backward(g_ln, keep["slot"][k], (d,), keep["ln_mean"][k], keep["ln_rstd"][k],
                                          pool_norm_w, None, [True, False, False])[0].add_(g_slots[:, k])
            g_h = _rms_backward(g_slot @ mem_g, f_normed[k], f_rstd[k])
            grads["proj"].append(g_proj)
            grads["ln"].append(g_ln)
            grads["slot"].append(g_slot)
            for i in range(shape.n_layers - 1, -1, -1):
                recs = ctx.records[i]
                scan_after = recs[k + 1].scan if k + 1 < W else ctx.final_scan[i]
                g_history = g_hist_ext[i][k + dc - 1] if k + dc - 1 >= W else None
                g_h, g_scan_carry[i], step_grads = _layer_step_backward(
                    layers[i], recs[k], scan_after, g_h, g_scan_carry[i], g_conv_pre[i], g_history, k,
                    rms[i][0][k], rms[i][1][k], g_A[i], split)
                layer_grads[i].append(step_grads)
            g_ph = (g_h @ pool_out_w).view(B, H, dh)
            ph = keep["ph"][k].view(B, H, dh)
            mem_values = ctx.ring[k:k + N, :, H:].view(N, B, H, dh)
            w_mem = keep["w_mem"][k]
            dot = (g_ph * ph).sum(-1) + ext_dot[k]  # sum_j w_j g_w_j over the whole window
            g_w_mem = (g_ph * mem_values).sum(-1) + g_mem_weights[k]
            g_ring[k:k + N, :, :H] += w_mem * (g_w_mem - dot)
            g_ring[k:k + N, :, H:] += (w_mem.unsqueeze(-1) * g_ph).flatten(2)
            grads["pooled"].append(g_h)
            grads["ph"].append(g_ph)
            grads["dot"].append(dot)
        return _finish(ctx, grads, layer_grads, g_ring, g_conv_pre, g_hist_ext, g_scan_carry, g_A, g_tok_weights,
                       window, rms, f_normed)


def _finish(ctx, grads, layer_grads, g_ring, g_conv_pre, g_hist_ext, g_scan_carry, g_A, g_tok_weights, window,
            rms, f_normed):
    """Everything that waits for the whole reverse loop: the token half and every weight gradient."""
    shape, (B, W, d, dh) = ctx.shape, ctx.dims
    N, H, R = shape.n_slots, shape.heads, shape.dt_rank
    keep = ctx.pool_keep
    pool_norm_w, pool_norm_b, query, key_w, value_w, pool_out_w, norm_f_w, mem_w = _named(ctx.cparams)[0]

    def rows(values: list[Tensor]) -> Tensor:  # per-write tensors gathered in reverse -> (W*B, ...)
        return torch.stack(values[::-1]).flatten(0, 1)

    def kept(values: list[Tensor]) -> Tensor:  # per-write tensors gathered in order -> (W*B, ...)
        return torch.stack(values).flatten(0, 1)

    # the token half of the pooling
    g_ph = torch.stack(grads["ph"][::-1], 1)  # (B, W, H, dh)
    dot = torch.stack(grads["dot"][::-1], 1)  # (B, W, H)
    tok_w = ctx.tok_weights  # (B, W, M, H)
    g_tok_w = (g_ph.unsqueeze(2) * ctx.win_values).sum(-1) + g_tok_weights
    g_win_scores = tok_w * (g_tok_w - dot.unsqueeze(2))
    g_win_values = (tok_w.unsqueeze(-1) * g_ph.unsqueeze(2)).flatten(3)
    flat_window = window.flatten()
    g_token_scores = g_win_scores.new_zeros(B, ctx.token_len, H).index_add_(1, flat_window, g_win_scores.flatten(1, 2))
    g_token_values = g_win_values.new_zeros(B, ctx.token_len, d).index_add_(1, flat_window, g_win_values.flatten(1, 2))

    # pooling output, slot projection, final norm, memory projection
    g_pool_out = rows(grads["pooled"]).t() @ kept(keep["ph"])
    x_hat = (kept(keep["slot"]) - kept(keep["ln_mean"])) * kept(keep["ln_rstd"])
    g_proj_w = (x_hat * pool_norm_w + pool_norm_b).t() @ rows(grads["proj"])  # LN outputs^T @ grads: (d, H + d)
    g_q_eff, g_value = g_proj_w[:, :H], g_proj_w[:, H:].t()
    scale = 1 / math.sqrt(dh)
    g_key = (query.unsqueeze(-1) * g_q_eff.t().unsqueeze(1) * scale).reshape(d, d)
    g_query = torch.einsum("hed,dh->he", key_w.view(H, dh, d), g_q_eff) * scale
    g_ln = rows(grads["ln"])
    g_slot = rows(grads["slot"])
    m_final = g_slot.t() @ f_normed.flatten(0, 1)  # d loss / d (mem_w * norm_f_w)
    param_grads = list(PoolWeights(norm_w=(g_ln * x_hat).sum(0), norm_b=g_ln.sum(0), query=g_query, key_w=g_key,
                                   value_w=g_value, out_w=g_pool_out, norm_f_w=(m_final * mem_w).sum(0),
                                   mem_w=m_final * norm_f_w))
    g_conv0 = []
    for layer, recs, step_grads, hist, g_pre, g_ext, gA, (h_normed, _) in zip(
            ctx.layers, ctx.records, layer_grads, ctx.conv_in, g_conv_pre, g_hist_ext, g_A, rms):
        dc = layer.conv_w.shape[0]
        u, xp, yg = (torch.stack(field).flatten(0, 1) for field in (
            [r.u for r in recs], [r.xp for r in recs], [r.yg for r in recs]))
        g_out, g_x, g_z, g_xp, g_dpre, g_y = (rows(list(field)) for field in zip(*step_grads))
        m_in = torch.cat([g_x, g_z], dim=-1).t() @ h_normed.flatten(0, 1)  # d loss / d (in_proj * norm weight)
        g_c = g_pre[dc - 1:dc - 1 + W]  # (W, B, d_inner)
        param_grads += LayerWeights(
            norm_w=(m_in * layer.in_proj).sum(0),
            in_proj=m_in * layer.norm,
            conv_w=torch.stack([(g_c * hist[j:j + W]).sum((0, 1)) for j in range(dc)], -1).unsqueeze(1),
            conv_b=g_c.sum((0, 1)),
            x_proj=g_xp.t() @ u,
            dt_w=g_dpre.t() @ xp[:, :R],
            dt_b=g_dpre.sum(0),
            A_log=gA.sum(0) * layer.A,
            D=(g_y * u).sum(0),
            out_proj=g_out.t() @ yg,
        )
        # the conv state before this call: rows 0..dc-2 of the history
        g_conv0.append(torch.stack([(g_pre[r:r + dc] * layer.conv_w_rev).sum(0) + g_ext[r] for r in range(dc - 1)], -1)
                       if dc > 1 else g_ext[:0].permute(1, 2, 0))
    g_init = g_ring[:N].transpose(0, 1)
    grads_in = [g_token_scores, g_token_values, g_init[..., :H], g_init[..., H:], torch.stack(g_conv0, 1),
                torch.stack(g_scan_carry, 1), g_slot.view(W, B, d).transpose(0, 1) if shape.has_offsets else None]
    out = [None, None, None, None]
    for grad, dtype in zip(grads_in + param_grads, ctx.input_dtypes):
        out.append(None if grad is None else grad.to(dtype))
    return tuple(out)


@torch.compiler.disable  # a hand-written kernel in Python: tracing its loops would only unroll them
def fused_write_chain(pooling: nn.Module, ssm: nn.Module, memory_proj: nn.Linear, slot_offsets: Tensor | None,
                      token_scores: Tensor, token_values: Tensor, token_valid: Tensor, window: Tensor,
                      slot_scores: Tensor, slot_values: Tensor, slot_valid: Tensor,
                      ssm_state: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """The writes of one call over a Mamba memory (arguments as in `write_chain`; window (W, M) holds
    the token index of every window position). Returns slots (B, W, d), weights (B, W, heads, N + M),
    the latest N slot scores and values, and the new SSM state."""
    mixer = ssm.layers[0].mixer
    shape = _Shape(n_slots=slot_scores.shape[1], heads=pooling.n_heads, d_state=mixer.d_state,
                   dt_rank=mixer.dt_rank, n_layers=len(ssm.layers), norm_eps=ssm.norm_f.eps,
                   pool_eps=pooling.norm.eps, has_offsets=slot_offsets is not None)
    offsets = slot_offsets if slot_offsets is not None else token_values.new_zeros(0)
    pool, layers = chain_weights(pooling, ssm, memory_proj)
    params = [*pool, *(weight for layer in layers for weight in layer)]
    with torch.autocast(token_values.device.type, enabled=False):
        slots, weights, scores, values, conv, scan = _FusedWriteChain.apply(
            shape, window, token_valid, slot_valid, token_scores, token_values, slot_scores, slot_values,
            ssm_state["ssm_conv"], ssm_state["ssm_scan"], offsets, *params)
    return slots, weights, scores, values, {"ssm_conv": conv, "ssm_scan": scan}
