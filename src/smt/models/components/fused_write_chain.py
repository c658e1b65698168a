"""The write chain over a Mamba memory as one autograd Function with a hand-written backward.

Same maths as the loop in `write_chain` (pool the window, step every Mamba layer, project the
new slot), but nothing is recorded per write: the forward runs without autograd and keeps the
few vectors each write needs, and the backward runs the chain in reverse by hand. Per write,
only what is truly sequential stays in the loop (the memory half of the softmax, the layer
steps and their adjoints); everything else is done once for all writes:
  - the token half of every window (its max, normaliser and weighted value sum) before the
    loop, and its gradient after it;
  - every weight gradient: one matrix product over all writes instead of one outer product
    per write and layer.
Float32 throughout, whatever autocast says: at batch sizes where this chain matters its
matrix-vector products cost the same in either dtype, and the state stays exact.

`write_chain` (the autograd loop) is the reference this is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LAYER_PARAMS = ("norm", "in_proj", "conv_w", "conv_b", "x_proj", "dt_w", "dt_b", "A_log", "D", "out_proj")


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


def _mamba_layer_params(ssm: nn.Module) -> list[Tensor]:
    params = []
    for layer in ssm.layers:
        mixer = layer.mixer
        params += [layer.norm.weight, mixer.in_proj.weight, mixer.conv1d.weight, mixer.conv1d.bias,
                   mixer.x_proj.weight, mixer.dt_proj.weight, mixer.dt_proj.bias, mixer.A_log, mixer.D,
                   mixer.out_proj.weight]
    return params


def _rms_backward(grad: Tensor, normed: Tensor, rstd: Tensor) -> Tensor:
    """Gradient wrt h of normed = h * rstd, rstd = (mean(h^2) + eps)^-1/2."""
    return rstd * (grad - normed * (grad * normed).mean(-1, keepdim=True))


class _FusedWriteChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shape: _Shape, window: Tensor, token_valid: Tensor, slot_valid: Tensor,
                token_scores: Tensor, token_values: Tensor, slot_scores: Tensor, slot_values: Tensor,
                conv0: Tensor, scan0: Tensor, offsets: Tensor, *params: Tensor):
        N, H = shape.n_slots, shape.heads
        B, _, d = token_values.shape
        W, dh = window.shape[0], d // H
        f32 = [p.float() for p in params]
        pool_norm_w, pool_norm_b, query, key_w, value_w, pool_out_w, norm_f_w, mem_w = f32[:8]
        layers = [dict(zip(_LAYER_PARAMS, f32[8 + 10 * i: 18 + 10 * i])) for i in range(shape.n_layers)]
        for lp in layers:
            lp["A"] = -torch.exp(lp["A_log"])
            lp["conv_w"] = lp["conv_w"].squeeze(1)
        # the score of a vector is LN(v) @ q_eff: the learned query folded into the key projection
        q_eff = torch.einsum("hed,he->dh", key_w.view(H, dh, d), query) / math.sqrt(dh)
        proj_w = torch.cat([q_eff, value_w.t()], dim=1)  # (d, H + d): scores then values

        # token half of every window, for all writes at once
        win_scores = token_scores.float()[:, window].masked_fill(~token_valid[:, window, None], float("-inf"))
        tok_max = win_scores.amax(2)  # (B, W, H)
        tok_exp = torch.exp(win_scores - tok_max[:, :, None])  # (B, W, M, H)
        win_values = token_values.float()[:, window].view(B, W, -1, H, dh)
        tok_sum = (tok_exp.unsqueeze(-1) * win_values).sum(2)  # (B, W, H, dh)
        tok_max, tok_norm, tok_sum = (t.transpose(0, 1).contiguous() for t in (tok_max, tok_exp.sum(2), tok_sum))

        # memory ring, time-major: rows 0..N-1 the slots before this call, row N + k the slot of write k
        ring = token_values.new_zeros(N + W, B, H + d, dtype=torch.float32)
        ring[:N, :, :H] = slot_scores.float().masked_fill(~slot_valid[..., None], float("-inf")).transpose(0, 1)
        ring[:N, :, H:] = slot_values.float().transpose(0, 1)
        conv = [conv0[:, i].float() for i in range(shape.n_layers)]
        scans = [[scan0[:, i].float()] for i in range(shape.n_layers)]
        offsets = offsets.float()
        keep: dict[str, list] = {name: [] for name in ("w_mem", "tok_scale", "ph", "pooled", "f_normed", "f_rstd",
                                                      "slot", "ln", "ln_mean", "ln_rstd")}
        saved = [{name: [] for name in ("h_normed", "rstd", "xz", "window", "c", "u", "xp", "dpre", "delta",
                                        "decay", "y", "yg")} for _ in layers]
        slots = []
        for k in range(W):
            mem = ring[k:k + N]
            mem_scores, mem_values = mem[..., :H], mem[..., H:].view(N, B, H, dh)
            top = torch.maximum(tok_max[k], mem_scores.amax(0))
            mem_exp = torch.exp(mem_scores - top)
            tok_factor = torch.exp(tok_max[k] - top)
            inv_norm = (tok_norm[k] * tok_factor + mem_exp.sum(0)).reciprocal()
            w_mem = mem_exp * inv_norm
            ph = tok_sum[k] * (tok_factor * inv_norm).unsqueeze(-1) + (w_mem.unsqueeze(-1) * mem_values).sum(0)
            ph = ph.flatten(1)
            h = ph @ pool_out_w.t()
            keep["w_mem"].append(w_mem)
            keep["tok_scale"].append(tok_factor * inv_norm)
            keep["ph"].append(ph)
            keep["pooled"].append(h)
            for i, (lp, sv) in enumerate(zip(layers, saved)):
                rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + shape.norm_eps)
                h_normed = h * rstd
                xz = (h_normed * lp["norm"]) @ lp["in_proj"].t()
                x_in, z = xz.chunk(2, dim=-1)
                win = torch.cat([conv[i], x_in.unsqueeze(-1)], dim=-1)
                c = (win * lp["conv_w"]).sum(-1) + lp["conv_b"]
                u = F.silu(c)
                xp = u @ lp["x_proj"].t()
                dpre = torch.addmm(lp["dt_b"], xp[:, :shape.dt_rank], lp["dt_w"].t())
                delta = F.softplus(dpre)
                decay = torch.exp(delta.unsqueeze(-1) * lp["A"])
                Bm, Cm = xp[:, shape.dt_rank:shape.dt_rank + shape.d_state], xp[:, shape.dt_rank + shape.d_state:]
                scan = torch.addcmul(decay * scans[i][-1], (delta * u).unsqueeze(-1), Bm.unsqueeze(1))
                y = torch.bmm(scan, Cm.unsqueeze(-1)).squeeze(-1) + u * lp["D"]
                yg = y * F.silu(z)
                h = h + yg @ lp["out_proj"].t()
                conv[i] = win[..., 1:]
                scans[i].append(scan)
                for name, value in (("h_normed", h_normed), ("rstd", rstd), ("xz", xz), ("window", win), ("c", c),
                                    ("u", u), ("xp", xp), ("dpre", dpre), ("delta", delta), ("decay", decay),
                                    ("y", y), ("yg", yg)):
                    sv[name].append(value)
            f_rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + shape.norm_eps)
            f_normed = h * f_rstd
            slot = (f_normed * norm_f_w) @ mem_w.t()
            if shape.has_offsets:
                slot = slot + offsets[:, k]
            ln, ln_mean, ln_rstd = torch.native_layer_norm(slot, (d,), pool_norm_w, pool_norm_b, shape.pool_eps)
            torch.mm(ln, proj_w, out=ring[N + k])
            for name, value in (("f_normed", f_normed), ("f_rstd", f_rstd), ("slot", slot), ("ln", ln),
                                ("ln_mean", ln_mean), ("ln_rstd", ln_rstd)):
                keep[name].append(value)
            slots.append(slot)

        w_mem = torch.stack(keep["w_mem"])  # (W, N, B, H)
        tok_scale = torch.stack(keep["tok_scale"]).transpose(0, 1)  # (B, W, H)
        tok_weights = tok_exp * tok_scale[:, :, None]  # (B, W, M, H)
        weights = torch.cat([w_mem.permute(2, 0, 3, 1), tok_weights.permute(0, 1, 3, 2)], dim=-1)
        final_ring = ring[W:].transpose(0, 1)
        ctx.shape, ctx.dims = shape, (B, W, d, dh)
        ctx.keep, ctx.saved_layers, ctx.layers, ctx.scans = keep, saved, layers, scans
        ctx.tok_weights, ctx.win_values, ctx.ring = tok_weights, win_values, ring
        ctx.f32 = f32
        ctx.proj_w, ctx.q_eff = proj_w, q_eff
        ctx.input_dtypes = [t.dtype for t in (token_scores, token_values, slot_scores, slot_values, conv0, scan0,
                                              offsets)] + [p.dtype for p in params]
        ctx.token_len = token_values.shape[1]
        ctx.save_for_backward(window)
        return (torch.stack(slots, 1).to(token_values.dtype), weights, final_ring[..., :H].contiguous(),
                final_ring[..., H:].to(slot_values.dtype), torch.stack(conv, 1),
                torch.stack([s[-1] for s in scans], 1))

    @staticmethod
    def backward(ctx, g_slots, g_weights, g_final_scores, g_final_values, g_conv, g_scan):
        shape, (B, W, d, dh) = ctx.shape, ctx.dims
        (window,) = ctx.saved_tensors
        N, H, R, S = shape.n_slots, shape.heads, shape.dt_rank, shape.d_state
        keep, layers = ctx.keep, ctx.layers
        f32 = ctx.f32
        pool_norm_w, _, query, key_w, value_w, pool_out_w, norm_f_w, mem_w = f32[:8]
        g_slots, g_weights = g_slots.float(), g_weights.float()
        g_ring = ctx.ring.new_zeros(N + W, B, H + d)
        g_ring[W:, :, :H] = g_final_scores.float().transpose(0, 1)
        g_ring[W:, :, H:] += g_final_values.float().transpose(0, 1)
        g_mem_weights = g_weights[..., :N].permute(1, 3, 0, 2)  # (W, N, B, H)
        g_tok_weights = g_weights[..., N:].permute(0, 1, 3, 2)  # (B, W, M, H)
        # the weights' own gradient enters the softmax backward through sum_j w_j * g_w_j
        ext_dot = ((g_mem_weights * torch.stack(keep["w_mem"])).sum(1) +
                   (g_tok_weights * ctx.tok_weights).sum(2).transpose(0, 1))  # (W, B, H)
        g_conv_carry = [g_conv[:, i].float() for i in range(shape.n_layers)]
        g_scan_carry = [g_scan[:, i].float() for i in range(shape.n_layers)]
        g_A = [torch.zeros_like(lp["A"]).expand(B, -1, -1).contiguous() for lp in layers]
        grads: dict[str, list] = {name: [] for name in ("proj", "ln", "slot", "f", "pooled", "ph", "dot")}
        layer_grads = [{name: [] for name in ("xz", "c", "xp", "dpre", "y", "o", "n")} for _ in layers]
        d_inner = layers[0]["D"].shape[0]
        mem = ctx.ring
        for k in range(W - 1, -1, -1):
            g_proj = g_ring[N + k]
            g_ln = g_proj @ ctx.proj_w.t()
            g_slot, _, _ = torch.ops.aten.native_layer_norm_backward(
                g_ln, keep["slot"][k], (d,), keep["ln_mean"][k], keep["ln_rstd"][k], pool_norm_w, None,
                [True, False, False])
            g_slot = g_slot + g_slots[:, k]
            g_f = g_slot @ mem_w
            g_h = _rms_backward(g_f * norm_f_w, keep["f_normed"][k], keep["f_rstd"][k])
            grads["proj"].append(g_proj)
            grads["ln"].append(g_ln)
            grads["slot"].append(g_slot)
            grads["f"].append(g_f)
            for i in range(shape.n_layers - 1, -1, -1):
                lp, sv, lg = layers[i], ctx.saved_layers[i], layer_grads[i]
                u, delta, decay, xp = sv["u"][k], sv["delta"][k], sv["decay"][k], sv["xp"][k]
                z = sv["xz"][k][:, d_inner:]
                g_yg = g_h @ lp["out_proj"]
                g_y = g_yg * F.silu(z)
                g_z = torch.ops.aten.silu_backward(g_yg * sv["y"][k], z)
                Bm, Cm = xp[:, R:R + S], xp[:, R + S:]
                g_state = torch.addcmul(g_scan_carry[i], g_y.unsqueeze(-1), Cm.unsqueeze(1))
                g_C = torch.bmm(g_y.unsqueeze(1), ctx.scans[i][k + 1]).squeeze(1)
                g_decay = g_state * ctx.scans[i][k] * decay
                g_A[i].addcmul_(g_decay, delta.unsqueeze(-1))
                g_delta = (g_decay * lp["A"]).sum(-1)
                g_B = torch.bmm((delta * u).unsqueeze(1), g_state).squeeze(1)
                g_deltau = torch.bmm(g_state, Bm.unsqueeze(-1)).squeeze(-1)
                g_delta = torch.addcmul(g_delta, g_deltau, u)
                g_u = torch.addcmul(g_y * lp["D"], g_deltau, delta)
                g_scan_carry[i] = g_state * decay
                g_dpre = torch.ops.aten.softplus_backward(g_delta, sv["dpre"][k], 1.0, 20.0)
                g_xp = torch.cat([g_dpre @ lp["dt_w"], g_B, g_C], dim=-1)
                g_u = torch.addmm(g_u, g_xp, lp["x_proj"])
                g_c = torch.ops.aten.silu_backward(g_u, sv["c"][k])
                g_window = g_c.unsqueeze(-1) * lp["conv_w"]
                g_window[..., 1:] += g_conv_carry[i]
                g_conv_carry[i] = g_window[..., :-1]
                g_xz = torch.cat([g_window[..., -1], g_z], dim=-1)
                g_n = g_xz @ lp["in_proj"]
                lg["o"].append(g_h)
                g_h = g_h + _rms_backward(g_n * lp["norm"], sv["h_normed"][k], sv["rstd"][k])
                for name, value in (("xz", g_xz), ("c", g_c), ("xp", g_xp), ("dpre", g_dpre), ("y", g_y),
                                    ("n", g_n)):
                    lg[name].append(value)
            g_ph = (g_h @ pool_out_w).view(B, H, dh)
            ph = keep["ph"][k].view(B, H, dh)
            mem_values = mem[k:k + N, :, H:].view(N, B, H, dh)
            w_mem = keep["w_mem"][k]
            dot = (g_ph * ph).sum(-1) + ext_dot[k]  # sum_j w_j g_w_j over the whole window
            g_w_mem = (g_ph * mem_values).sum(-1) + g_mem_weights[k]
            g_ring[k:k + N, :, :H] += w_mem * (g_w_mem - dot)
            g_ring[k:k + N, :, H:] += (w_mem.unsqueeze(-1) * g_ph).flatten(2)
            grads["pooled"].append(g_h)
            grads["ph"].append(g_ph)
            grads["dot"].append(dot)
        return _FusedWriteChain._finish(ctx, grads, layer_grads, g_ring, g_conv_carry, g_scan_carry, g_A,
                                        g_tok_weights, window)

    @staticmethod
    def _finish(ctx, grads, layer_grads, g_ring, g_conv_carry, g_scan_carry, g_A, g_tok_weights, window):
        """Everything that waits for the whole reverse loop: token-half and weight gradients."""
        shape, (B, W, d, dh) = ctx.shape, ctx.dims
        N, H = shape.n_slots, shape.heads
        keep, f32 = ctx.keep, ctx.f32
        pool_norm_w, pool_norm_b, query, key_w, value_w, pool_out_w, norm_f_w, mem_w = f32[:8]

        def rows(values: list[Tensor]) -> Tensor:  # per-write tensors (gathered in reverse) -> (W*B, ...)
            return torch.stack(values[::-1]).flatten(0, 1)

        def kept(name: str) -> Tensor:
            return torch.stack(keep[name]).flatten(0, 1)

        # token half of the pooling
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
        g_pool_out = rows(grads["pooled"]).t() @ kept("ph")
        g_proj_w = kept("ln").t() @ rows(grads["proj"])  # (d, H + d)
        g_q_eff, g_value = g_proj_w[:, :H], g_proj_w[:, H:].t()
        scale = 1 / math.sqrt(dh)
        g_key = (query.unsqueeze(-1) * g_q_eff.t().unsqueeze(1) * scale).reshape(d, d)
        g_query = torch.einsum("hed,dh->he", key_w.view(H, dh, d), g_q_eff) * scale
        slot_rows = kept("slot")
        x_hat = (slot_rows - kept("ln_mean")) * kept("ln_rstd")
        g_ln = rows(grads["ln"])
        g_norm_w, g_norm_b = (g_ln * x_hat).sum(0), g_ln.sum(0)
        g_slot = rows(grads["slot"])
        g_mem = g_slot.t() @ (kept("f_normed") * norm_f_w)
        g_norm_f = (rows(grads["f"]) * kept("f_normed")).sum(0)
        param_grads = [g_norm_w, g_norm_b, g_query, g_key, g_value, g_pool_out, g_norm_f, g_mem]
        for lp, sv, lg, gA in zip(ctx.layers, ctx.saved_layers, layer_grads, g_A):
            h_normed = torch.stack(sv["h_normed"]).flatten(0, 1)
            u = torch.stack(sv["u"]).flatten(0, 1)
            g_xz, g_c, g_dpre = rows(lg["xz"]), rows(lg["c"]), rows(lg["dpre"])
            dt_low = torch.stack(sv["xp"]).flatten(0, 1)[:, :shape.dt_rank]
            windows = torch.stack(sv["window"]).flatten(0, 1)
            param_grads += [
                (rows(lg["n"]) * h_normed).sum(0),
                g_xz.t() @ (h_normed * lp["norm"]),
                (g_c.unsqueeze(-1) * windows).sum(0).unsqueeze(1),
                g_c.sum(0),
                rows(lg["xp"]).t() @ u,
                g_dpre.t() @ dt_low,
                g_dpre.sum(0),
                gA.sum(0) * lp["A"],
                (rows(lg["y"]) * u).sum(0),
                rows(lg["o"]).t() @ torch.stack(sv["yg"]).flatten(0, 1),
            ]
        g_init = g_ring[:N].transpose(0, 1)
        grads_in = [g_token_scores, g_token_values, g_init[..., :H], g_init[..., H:],
                    torch.stack(g_conv_carry, 1), torch.stack(g_scan_carry, 1),
                    g_slot.view(W, B, d).transpose(0, 1) if shape.has_offsets else None] + param_grads
        out = [None, None, None, None]
        for grad, dtype in zip(grads_in, ctx.input_dtypes):
            out.append(None if grad is None else grad.to(dtype))
        return tuple(out)


def fused_write_chain(pooling: nn.Module, ssm: nn.Module, memory_proj: nn.Linear, slot_offsets: Tensor | None,
                      token_scores: Tensor, token_values: Tensor, token_valid: Tensor, window: Tensor,
                      slot_scores: Tensor, slot_values: Tensor, slot_valid: Tensor,
                      ssm_state: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """The writes of one call over a Mamba memory (arguments as in `write_chain`; window (W, M) holds
    the token index of every window position). Returns slots (B, W, d), weights (B, W, heads, N + M),
    the latest N slot scores and values, and the new SSM state."""
    shape = _Shape(n_slots=slot_scores.shape[1], heads=pooling.n_heads, d_state=ssm.layers[0].mixer.d_state,
                   dt_rank=ssm.layers[0].mixer.dt_rank, n_layers=len(ssm.layers), norm_eps=ssm.norm_f.eps,
                   pool_eps=pooling.norm.eps, has_offsets=slot_offsets is not None)
    offsets = slot_offsets if slot_offsets is not None else token_values.new_zeros(0)
    params = [pooling.norm.weight, pooling.norm.bias, pooling.query, pooling.key.weight, pooling.value.weight,
              pooling.out.weight, ssm.norm_f.weight, memory_proj.weight] + _mamba_layer_params(ssm)
    with torch.autocast(token_values.device.type, enabled=False):
        slots, weights, scores, values, conv, scan = _FusedWriteChain.apply(
            shape, window, token_valid, slot_valid, token_scores, token_values, slot_scores, slot_values,
            ssm_state["ssm_conv"], ssm_state["ssm_scan"], offsets, *params)
    return slots, weights, scores, values, {"ssm_conv": conv, "ssm_scan": scan}
