"""Memory diagnostics: why does (or doesn't) the memory carry information beyond the window?

Four measurements on a batch of passkey-style prompts (token ids (B, T), a fresh stream each),
each answering one question about the path key token -> pooling -> SSM -> slot -> transformer:

- `write_gradient_by_distance`: does the loss reach the memory? The gradient norm of the loss
  at the scored position(s) w.r.t. the input of the SSM at every write (the pooled vector) and
  w.r.t. its output, by the write's distance in tokens from the scored position. Writes at or
  after the scored position get exactly zero (causality).
- `key_pooling_weight`: does the pooling pick the key out of its window? The pooling weight on
  the key token at the writes whose window holds it, against uniform and the other tokens.
- `ssm_retention`: does the SSM state keep it? exp(delta * A) per layer, channel and state
  dimension per SSM step (Mamba; delta from each layer's actual inputs), or the learned decay
  (SimpleSSM), as quantiles and half-lives, and the retention accumulated from the key's last
  write to the last write the question sees.
- `memory_attention_mass`: does the transformer read the slots? The softmax mass from token
  queries on memory-slot keys per layer (recomputed from the layers' q/k/v through hooks and
  checked against the layers' actual outputs).
- `write_gate_usage` (gated memories only): which writes does the memory keep? The write gates of
  the writes whose window holds the key against all other writes: mean, and the share exactly
  closed (g = 0) and fully open (docs/MEMORY.md, "What is proven": hard write gates).

`diagnose` builds synthetic passkey prompts and returns them all as one JSON-serialisable dict;
`plot_diagnostics` draws them; `summarize` formats the few numbers that matter. Every function
runs the model in eval mode with the autograd write chain (memory.fused = False). The gradient
at the writes comes from the model's own record of them (`memory.record_writes`: aux["write_record"],
a `smt.models.memory.WriteRecord`, whichever path the writes ran); the SSM deltas and the attention
inputs from forward hooks on named submodules (each layer's x_proj and attn), added only for the
call. The model is restored afterwards (modes, flags, hooks); parameters and outputs are never
changed. Distances assume each prompt starts a fresh stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smt.evaluation.figures import save_figure

IGNORE_INDEX = -100
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HALF_LIFE_BINS = np.linspace(-2.0, 6.0, 41)  # log10(half-life in steps) histogram edges


# --------------------------------------------------------------------------------- helpers
def _arch(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "arch", type(model).__name__)


def _require_memory(model, what: str) -> None:
    if not getattr(model, "n_slots", 0):
        raise ValueError(f"{what} needs a model with memory writes; this model (arch={_arch(model)!r}, "
                         f"n_slots={getattr(model, 'n_slots', 0)}) has none (swa/gpt/mamba baselines or "
                         "n_ssm_outputs=0)")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _ids(model, input_ids) -> Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(ids.shape)}")
    return ids.long().to(_device(model))


def _positions(values, batch: int, name: str, length: int) -> Tensor:
    out = torch.as_tensor(values, dtype=torch.long).reshape(-1).cpu()
    if out.numel() == 1 and batch > 1:
        out = out.expand(batch).clone()
    if out.numel() != batch:
        raise ValueError(f"{name} must hold one position per prompt ({batch}), got {out.numel()}")
    if bool((out < 0).any()) or bool((out >= length).any()):
        raise ValueError(f"{name} {out.tolist()} must lie in [0, {length - 1}]")
    return out


@contextmanager
def _diagnostic_mode(model: nn.Module, record: bool = False) -> Iterator[None]:
    """Eval mode and the autograd write chain (memory.fused = False) for the duration, and with
    `record` the memory's record of its writes (memory.record_writes = True); restored afterwards (an
    instance attribute as such, a class default by deleting the one set here)."""
    modes = [(m, m.training) for m in model.modules()]
    memory = getattr(model, "memory", None)
    flags = {} if memory is None else {name: value for name, value in (("fused", False), ("record_writes", True))
                                       if hasattr(memory, name) and (record or name != "record_writes")}
    missing = object()
    saved = {name: vars(memory).get(name, missing) for name in flags}
    try:
        model.eval()
        for name, value in flags.items():
            setattr(memory, name, value)
        yield
    finally:
        for name, old in saved.items():
            if old is missing:
                vars(memory).pop(name, None)
            else:
                setattr(memory, name, old)
        for module, mode in modes:
            module.training = mode


def _num(x) -> float | None:
    """A finite float, or None (JSON has no NaN / infinity)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _nums(values) -> list:
    array = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values, dtype=np.float64)
    if array.ndim == 0:
        return _num(array)
    return [_nums(v) if np.ndim(v) else _num(v) for v in array]


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {f"p{round(q * 100)}": None for q in QUANTILES}
    return {f"p{round(q * 100)}": _num(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}


def _nanmean(values) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return _num(array.mean()) if array.size else None


def _forward_with_hooks(model, ids: Tensor, handles: list) -> None:
    """One forward pass in diagnostic mode; the hooks are removed afterwards, whatever happens."""
    try:
        with _diagnostic_mode(model):
            model(ids)
    finally:
        for handle in handles:
            handle.remove()


def write_tokens(n_writes: int, stride: int) -> Tensor:
    """Index of the token after which write k happens in a fresh stream: (k + 1) * S - 1."""
    return (torch.arange(n_writes) + 1) * stride - 1


# ---------------------------------------------------------------- 1. gradient at the writes
def _by_distance(distance: np.ndarray, columns: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for d in np.unique(distance):
        pick = distance == d
        row: dict = {"distance": int(d), "n": int(pick.sum())}
        for name, values in columns.items():
            v = values[pick]
            row[f"{name}_mean"] = _num(v.mean())
            row[f"{name}_median"] = _num(np.median(v))
        rows.append(row)
    return rows


def distance_bins(window: int) -> list[tuple[int, float]]:
    """Distance bins (lo, hi] in tokens used by the summaries: within the window M, M-2M, 2M-4M, beyond."""
    return [(0, window), (window, 2 * window), (2 * window, 4 * window), (4 * window, math.inf)]


def write_gradient_by_distance(model, input_ids, targets) -> dict:
    """Gradient norms of the loss at every memory write, by the write's distance from the scored position.

    Loss: cross entropy summed over the positions where `targets` != -100 (so each prompt's
    gradients are those of its own loss, whatever the batch). Write k happens after token
    t_k = (k + 1) * S - 1; its distance is q - t_k with q the row's last scored position; writes
    with distance <= 0 cannot influence the scored logits and get exactly zero.

    The gradients are taken at the probes of the model's `WriteRecord` (zeros added where the SSM
    takes each write in and gives its output out): the gradient at the SSM's input is not the one
    through the write gate, which reads the same pooled vector.

    Returns a dict: mode ("loop": one SSM step per write, or "sequence"), stride, n_writes,
    write_token [W], scored_position [B], distance [B][W], input_grad_norm [B][W] (||dL/d pooled
    vector fed to the SSM||), output_grad_norm [B][W] (||dL/d SSM output||, all paths),
    slot_grad_norm [B][W] (||dL/d aux["memory"]||: the transformer's direct read of each slot;
    None when unavailable), loss (mean per scored token), per_sample_loss [B], correct [B]
    (argmax at the last scored position == target), by_distance (per distance: n and
    mean/median of each norm) and by_bin (the same over distance_bins(M)).
    """
    _require_memory(model, "write_gradient_by_distance")
    ids = _ids(model, input_ids)
    targets = torch.as_tensor(targets).long().to(ids.device)
    if targets.shape != ids.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    scored = targets != IGNORE_INDEX
    if not bool(scored.any(1).all()):
        raise ValueError("every row needs at least one scored position (targets != -100)")
    B, T = ids.shape
    S = model.config.stride
    with _diagnostic_mode(model, record=True), torch.enable_grad():
        logits, aux = model(ids)
        W = int(aux["n_writes"])
        if W == 0:
            raise ValueError(f"{T} tokens make no memory write (stride {S}); use longer prompts")
        record = aux.get("write_record")
        if record is None or record.input_probe.shape[:2] != (B, W):
            raise RuntimeError(f"the memory did not record its {W} writes (aux['write_record']: "
                               f"{None if record is None else tuple(record.input_probe.shape)}); the diagnostic "
                               "needs one SSM input and output per write")
        mode = record.mode
        memory = aux.get("memory")
        logp = F.log_softmax(logits.float(), -1)
        token_nll = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * scored
        loss = token_nll.sum()
        wanted = [record.input_probe, record.output_probe]
        if isinstance(memory, Tensor) and memory.requires_grad:
            wanted.append(memory)
        grads = list(torch.autograd.grad(loss, wanted, allow_unused=True))
    norm = [None if g is None else g.float().norm(dim=-1).detach().cpu() for g in grads]
    if norm[0] is None or norm[1] is None:
        raise RuntimeError("the loss does not depend on the SSM probes: the write chain bypassed them")
    last = (scored.long() * torch.arange(T, device=ids.device)).amax(1).cpu()
    t_k = write_tokens(W, S)
    distance = last[:, None] - t_k[None, :]
    rows, cols = torch.arange(B, device=ids.device), last.to(ids.device)
    correct = (logits.detach()[rows, cols].argmax(-1) == targets[rows, cols]).cpu()
    columns = {"input_grad_norm": norm[0].double().numpy(), "output_grad_norm": norm[1].double().numpy()}
    slot_norm = norm[2] if len(norm) > 2 else None
    if slot_norm is not None:
        columns["slot_grad_norm"] = slot_norm.double().numpy()
    dist = distance.numpy()
    by_bin = []
    for lo, hi in distance_bins(model.config.m_input_tokens):
        pick = (dist > lo) & (dist <= hi)
        row = {"lo": lo, "hi": None if math.isinf(hi) else hi, "n": int(pick.sum())}
        for name, values in columns.items():
            row[f"{name}_mean"] = _num(values[pick].mean()) if pick.any() else None
        by_bin.append(row)
    per_sample = token_nll.detach().sum(1) / scored.sum(1)
    return {
        "mode": mode,
        "stride": S,
        "n_writes": W,
        "write_token": t_k.tolist(),
        "scored_position": last.tolist(),
        "distance": distance.tolist(),
        "input_grad_norm": _nums(norm[0]),
        "output_grad_norm": _nums(norm[1]),
        "slot_grad_norm": None if slot_norm is None else _nums(slot_norm),
        "loss": _num(loss.detach() / scored.sum()),
        "per_sample_loss": _nums(per_sample),
        "correct": correct.tolist(),
        "by_distance": _by_distance(dist.reshape(-1), {k: v.reshape(-1) for k, v in columns.items()}),
        "by_bin": by_bin,
    }


# --------------------------------------------------------------- 2. pooling weight on the key
def covering_writes(key_position: int, n_writes: int, n_slots: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(write k, window position) of every write whose token window holds `key_position` (fresh
    stream): write k after token t_k = (k+1)*S - 1 pools tokens t_k-M+1..t_k at window positions
    N..N+M-1, so the key sits at N + M - 1 - (t_k - key_position)."""
    out = []
    for k in range(key_position // stride, n_writes):
        t = (k + 1) * stride - 1
        if t - key_position > window - 1:
            break
        if t >= key_position:
            out.append((k, n_slots + window - 1 - (t - key_position)))
    return out


@torch.no_grad()
def key_pooling_weight(model, input_ids, key_positions, query_positions=None) -> dict:
    """Pooling weight (heads averaged) on the key token at the writes whose window holds it.

    Returns a dict: uniform (1 / (N + M)), per_sample with key_position, distance (query
    position - key position; the query defaults to the last token), n_covering_writes, max and
    mean over the covering writes, max_over_heads (the largest single-head weight; when the model
    reports per-head weights), other_token_mean (mean weight on the other visible tokens of those
    windows), uniform_visible (1 / visible positions at those writes), memory_share (weight on
    memory slots) -- None where no write covers the key -- and summary: the means of those over
    covered prompts, ratio_max_to_uniform and ratio_max_to_other_tokens.
    """
    _require_memory(model, "key_pooling_weight")
    ids = _ids(model, input_ids)
    B, T = ids.shape
    keys = _positions(key_positions, B, "key_positions", T)
    queries = _positions(T - 1 if query_positions is None else query_positions, B, "query_positions", T)
    cfg = model.config
    N, M, S = model.n_slots, cfg.m_input_tokens, cfg.stride
    with _diagnostic_mode(model):
        _, aux = model(ids)
    W = int(aux["n_writes"])
    weights = aux["attention_weights"].detach().double().cpu()  # (B, W, N + M)
    per_head = aux.get("attention_weights_per_head")
    per_head = per_head.detach().double().cpu() if isinstance(per_head, Tensor) else None
    over_memory = bool(getattr(cfg, "pool_over_memory", True))
    nan = float("nan")
    rows: dict[str, list] = {k: [] for k in ("max", "mean", "max_over_heads", "other_token_mean",
                                             "uniform_visible", "memory_share", "n_covering_writes")}
    for b in range(B):
        cover = covering_writes(int(keys[b]), W, N, M, S)
        rows["n_covering_writes"].append(len(cover))
        if not cover:
            for name in ("max", "mean", "max_over_heads", "other_token_mean", "uniform_visible", "memory_share"):
                rows[name].append(nan)
            continue
        ks = torch.tensor([k for k, _ in cover])
        at = torch.tensor([i for _, i in cover])
        w = weights[b, ks, at]
        rows["max"].append(float(w.max()))
        rows["mean"].append(float(w.mean()))
        rows["max_over_heads"].append(float(per_head[b, ks, :, at].max()) if per_head is not None else nan)
        t_k = (ks + 1) * S - 1
        n_tokens = torch.clamp(t_k + 1, max=M).double()
        n_slots = torch.clamp(ks, max=N).double() if over_memory else torch.zeros(len(ks), dtype=torch.float64)
        token_sum = weights[b, ks, N:].sum(-1)
        other = torch.where(n_tokens > 1, (token_sum - w) / (n_tokens - 1).clamp(min=1), torch.full_like(w, nan))
        rows["other_token_mean"].append(float(other.mean()))
        rows["uniform_visible"].append(float((1.0 / (n_tokens + n_slots)).mean()))
        rows["memory_share"].append(float(weights[b, ks, :N].sum(-1).mean()))
    mean_max, mean_other = _nanmean(rows["max"]), _nanmean(rows["other_token_mean"])
    uniform = 1.0 / (N + M)
    summary = {
        "n_covered": int(sum(1 for n in rows["n_covering_writes"] if n)),
        "max": mean_max,
        "mean": _nanmean(rows["mean"]),
        "max_over_heads": _nanmean(rows["max_over_heads"]),
        "other_token_mean": mean_other,
        "uniform_visible": _nanmean(rows["uniform_visible"]),
        "memory_share": _nanmean(rows["memory_share"]),
        "ratio_max_to_uniform": None if mean_max is None else mean_max / uniform,
        "ratio_max_to_other_tokens": None if mean_max is None or not mean_other else mean_max / mean_other,
    }
    per_sample = {"key_position": keys.tolist(), "distance": (queries - keys).tolist(),
                  **{k: (v if k == "n_covering_writes" else _nums(v)) for k, v in rows.items()}}
    return {"uniform": uniform, "n_slots": N, "window_tokens": M, "stride": S, "n_writes": W,
            "per_sample": per_sample, "summary": summary}


# ------------------------------------------------------------------------- 3. SSM retention
def _ssm_layers(model) -> tuple[str, list[nn.Module]]:
    ssm = getattr(model, "ssm", None)
    if ssm is None or not hasattr(ssm, "layers"):
        raise ValueError(f"ssm_retention needs a model with an SSM stack (arch smt or mamba); this model "
                         f"(arch={_arch(model)!r}) has none")
    mixers = [layer.mixer for layer in ssm.layers]
    if all(hasattr(m, "A_log") and hasattr(m, "x_proj") and hasattr(m, "dt_proj") for m in mixers):
        return "mamba", mixers
    if all(hasattr(m, "decay_logit") for m in mixers):
        return "simple", mixers
    raise ValueError(f"unknown SSM layers {sorted({type(m).__name__ for m in mixers})}: expected Mamba mixers "
                     "(A_log, x_proj, dt_proj) or SimpleSSM recurrences (decay_logit)")


def _ssm_unit(model) -> str:
    """What one SSM step takes in: a pooled write, or a token (a Mamba LM, memory: token_rate)."""
    pooled = getattr(model, "n_slots", 0) and model.config.memory != "token_rate"
    return "write" if pooled else "token"


def _expected_steps(model, T: int) -> int:
    return T // model.config.stride if _ssm_unit(model) == "write" else T


@torch.no_grad()
def ssm_step_deltas(model, input_ids) -> list[Tensor]:
    """Mamba's per-step discretisation delta = softplus(dt_proj(x_proj(x)[:dt_rank])), float32,
    one (B, steps, d_inner) tensor per SSM layer, from each layer's actual inputs in a forward of
    the model (steps: the writes of an SMT model, the tokens of a Mamba LM). Captured with a
    forward hook on every layer's x_proj, so any code path that calls it (step, sequence, CUDA)
    is measured the same way."""
    kind, mixers = _ssm_layers(model)
    if kind != "mamba":
        raise ValueError("ssm_step_deltas applies to a Mamba SSM; a SimpleSSM's retention is its fixed decay")
    ids = _ids(model, input_ids)
    records: list[list[Tensor]] = [[] for _ in mixers]
    handles = []
    for i, mixer in enumerate(mixers):
        def hook(module, args, output, i=i):
            records[i].append(output.detach())
        handles.append(mixer.x_proj.register_forward_hook(hook))
    _forward_with_hooks(model, ids, handles)
    steps = _expected_steps(model, ids.shape[1])
    deltas = []
    for i, (mixer, rec) in enumerate(zip(mixers, records)):
        if rec and all(r.dim() == 2 for r in rec):
            out = torch.stack(rec, 1)
        elif len(rec) == 1 and rec[0].dim() == 3:
            out = rec[0]
        else:
            out = None
        if out is None or out.shape[1] != steps:
            raise RuntimeError(f"SSM layer {i}: x_proj was called {len(rec)} time(s), not once per step of "
                               f"{steps} steps; the diagnostic cannot attribute its inputs to steps")
        dt = out[..., : mixer.dt_rank].float()
        deltas.append(F.softplus(F.linear(dt, mixer.dt_proj.weight.float(), mixer.dt_proj.bias.float())))
    return deltas


def _mamba_A(mixer) -> Tensor:
    return -torch.exp(mixer.A_log.detach().float())  # (d_inner, d_state)


def _gated_log(log_r: Tensor, gate: Tensor | None) -> Tensor:
    """A gated write keeps g of the stepped state and 1 - g of the old one: its retention is
    g exp(delta A) + 1 - g, so log retention = log1p(g expm1(delta A)); without a gate, delta A."""
    return log_r if gate is None else torch.log1p(gate * torch.expm1(log_r))


def _sample_log_retention(delta: Tensor, A: Tensor, limit: int, generator: torch.Generator,
                          gates: Tensor | None = None) -> np.ndarray:
    """log retention over (batch, step, channel, state): all of it, or `limit` random entries;
    delta * A, or with the write gates (batch, step) that of a gated write (`_gated_log`)."""
    di, ds = A.shape
    flat = delta.reshape(-1, di).cpu().double()
    A = A.cpu().double()
    g = None if gates is None else gates.reshape(-1).cpu().double()
    if flat.shape[0] * di * ds <= limit:
        return _gated_log(flat[:, :, None] * A, None if g is None else g[:, None, None]).reshape(-1).numpy()
    rows = torch.randint(0, flat.shape[0], (limit,), generator=generator)
    c = torch.randint(0, di, (limit,), generator=generator)
    s = torch.randint(0, ds, (limit,), generator=generator)
    return _gated_log(flat[rows, c] * A[c, s], None if g is None else g[rows]).numpy()


@torch.no_grad()
def _step_gates(model, ids: Tensor) -> Tensor | None:
    """The write gates (B, writes) of a gated SMT memory with one SSM step per write, else None."""
    cfg = model.config
    if not getattr(cfg, "write_gate", False) or not getattr(model, "n_slots", 0):
        return None
    with _diagnostic_mode(model):
        _, aux = model(ids)
    return aux["write_gates"].float()


def _retention_stats(log_r: np.ndarray) -> dict:
    log_r = np.minimum(log_r, 0.0)
    with np.errstate(divide="ignore"):
        half_life = np.where(log_r < 0, -math.log(2) / np.where(log_r < 0, log_r, -1.0), np.inf)
    clipped = np.clip(np.log10(np.maximum(half_life, 1e-300)), HALF_LIFE_BINS[0], HALF_LIFE_BINS[-1])
    return {
        "retention": _quantiles(np.exp(log_r)),
        "half_life": _quantiles(half_life),
        "mean_retention": _num(np.exp(log_r).mean()) if log_r.size else None,
        "histogram": np.histogram(clipped, HALF_LIFE_BINS)[0].tolist(),
    }


def _key_query_steps(model, T: int, keys: Tensor, queries: Tensor) -> tuple[list, list]:
    """SSM step of the key (a write: the last one whose window holds it; a token: itself) and the
    last step the query sees (a write: the last visible at the query; a token: the query itself)."""
    if _ssm_unit(model) == "token":
        return keys.tolist(), queries.tolist()
    cfg = model.config
    S, M, W = cfg.stride, cfg.m_input_tokens, T // cfg.stride
    key_steps = []
    for kp in keys.tolist():
        cover = covering_writes(kp, W, model.n_slots, M, S)
        key_steps.append(cover[-1][0] if cover else None)
    return key_steps, [q // S - 1 for q in queries.tolist()]


def ssm_retention(model, input_ids, key_positions=None, query_positions=None, max_samples: int = 1 << 20,
                  seed: int = 0) -> dict:
    """Per-step retention of the SSM memory and the retention accumulated from the key to the query.

    Mamba: retention exp(delta * A) per (prompt, step, layer, channel, state) with delta from the
    layer's actual inputs (`ssm_step_deltas`), and for a gated memory (`write_gate`)
    that of the gated write, g exp(delta * A) + 1 - g (a closed write keeps the state whole);
    SimpleSSM: the learned decay per channel (the
    same every step). Steps are writes (SMT) or tokens (a Mamba LM). Quantiles are over prompts,
    steps, channels and states (at most `max_samples` random entries per layer).

    Returns a dict: kind ("mamba" | "simple"), unit ("write" | "token"), n_steps, sampled, gated,
    quantiles ("p5".."p95"), half_life_bins (edges of log10 half-life in steps), layers (per layer:
    retention and half_life quantiles, mean_retention, histogram counts, mean_delta for Mamba),
    overall (the same pooled over layers), and accumulated (None without key_positions): per-prompt
    key_step, query_step, n_steps (query_step - key_step; key_step None when no write holds the
    key) and, over prompts with n_steps > 0, per-layer quantiles of the accumulated retention
    prod_{k=key_step+1..query_step} retention_k and the fraction of (channel, state) pairs keeping
    at least half (fraction_above_half); per_sample_median over layers, channels and states.
    Half-lives are None where infinite (retention exactly 1).
    """
    kind, mixers = _ssm_layers(model)
    ids = _ids(model, input_ids)
    B, T = ids.shape
    steps = _expected_steps(model, T)
    generator = torch.Generator().manual_seed(seed)
    per_layer_log: list[np.ndarray] = []
    step_log: list[Tensor] = []  # per layer (B, steps, channels, [states]) log retention source
    layers = []
    sampled = False
    gates = _step_gates(model, ids) if kind == "mamba" else None
    if kind == "mamba":
        deltas = ssm_step_deltas(model, ids)
        for i, (mixer, delta) in enumerate(zip(mixers, deltas)):
            A = _mamba_A(mixer).to(delta.device)
            sampled |= delta.numel() * A.shape[1] > max_samples
            log_r = _sample_log_retention(delta, A, max_samples, generator, gates)
            per_layer_log.append(log_r)
            layers.append({"layer": i, **_retention_stats(log_r), "mean_delta": _num(delta.mean())})
            step_log.append(delta)
    else:
        for i, mixer in enumerate(mixers):
            log_r = F.logsigmoid(mixer.decay_logit.detach().double()).cpu().numpy()
            per_layer_log.append(log_r)
            layers.append({"layer": i, **_retention_stats(log_r)})
    overall = _retention_stats(np.concatenate(per_layer_log)) if per_layer_log else None
    result = {"kind": kind, "unit": _ssm_unit(model), "n_steps": steps, "sampled": sampled, "gated": gates is not None,
              "quantiles": list(QUANTILES), "half_life_bins": HALF_LIFE_BINS.tolist(),
              "layers": layers, "overall": overall, "accumulated": None}
    if key_positions is None:
        return result
    keys = _positions(key_positions, B, "key_positions", T)
    queries = _positions(T - 1 if query_positions is None else query_positions, B, "query_positions", T)
    key_steps, query_steps = _key_query_steps(model, T, keys, queries)
    n_steps = [None if k is None else q - k for k, q in zip(key_steps, query_steps)]
    live = [b for b, n in enumerate(n_steps) if n is not None and n > 0]
    acc_layers, per_sample = [], [[] for _ in range(B)]
    for i, mixer in enumerate(mixers):
        if kind == "mamba":
            delta = step_log[i].cpu()  # (B, steps, di)
            A = _mamba_A(mixer).cpu()
            log_acc = []
            for b in live:
                span = slice(key_steps[b] + 1, query_steps[b] + 1)
                per_step = delta[b, span].double()[:, :, None] * A.double()  # (steps, di, ds)
                gate = None if gates is None else gates[b, span].cpu().double()[:, None, None]
                log_acc.append(_gated_log(per_step, gate).sum(0).reshape(-1).numpy())
        else:
            log_a = F.logsigmoid(mixer.decay_logit.detach().double()).cpu().numpy()
            log_acc = [log_a * n_steps[b] for b in live]
        for b, values in zip(live, log_acc):
            per_sample[b].append(values)
        values = np.concatenate(log_acc) if log_acc else np.zeros(0)
        acc_layers.append({"layer": i, "retention": _quantiles(np.exp(values)),
                           "fraction_above_half": _num((values >= -math.log(2)).mean()) if values.size else None})
    medians = [_num(np.exp(np.median(np.concatenate(v)))) if v else None for v in per_sample]
    result["accumulated"] = {"key_step": key_steps, "query_step": query_steps, "n_steps": n_steps,
                             "n_prompts": len(live), "layers": acc_layers, "per_sample_median": medians}
    return result


# ----------------------------------------------------------------- 4. attention mass on slots
@torch.no_grad()
def memory_attention_mass(model, input_ids, check: bool = True) -> dict:
    """Per transformer layer, the softmax mass token queries put on memory-slot keys.

    The attention runs through SDPA, which returns no probabilities; a pre-hook on every layer's
    attention module keeps its input, and the probabilities are recomputed in float32 from the
    layer's own c_attn (and RoPE), with the window of docs/architecture.md (semantics) (token i: tokens i-M+1..i and
    slots written after tokens < i, the latest N of them), in query blocks so memory stays linear
    in T. With `check`, the recomputed probabilities times the values, through c_proj, must
    reproduce the layer's actual output (else RuntimeError): the numbers are those of the model.

    Returns a dict: n_layers, n_tokens_with_memory (tokens seeing >= 1 slot), uniform (the mass a
    uniform softmax over each token's visible keys would give, tokens with memory), per_layer
    (layer, mass: mean over prompts, tokens and heads; mass_with_memory: over tokens seeing a
    slot; per_head: mass_with_memory per head; max: the largest single token/head mass), and
    check_max_error (relative error of the output reconstruction; None without check).
    """
    from smt.models.components.rope import apply_rope

    _require_memory(model, "memory_attention_mass")
    ids = _ids(model, input_ids)
    B, T = ids.shape
    cfg = model.config
    N, M, S = model.n_slots, cfg.m_input_tokens, cfg.stride
    blocks = list(model.transformer.h)
    captured: list[dict] = [{} for _ in blocks]
    handles = []
    for i, block in enumerate(blocks):
        def pre(module, args, kwargs, i=i):
            names = ("x", "n_tokens", "rope")
            values = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]
            captured[i].update(zip(names, values))

        def post(module, args, output, i=i):
            captured[i]["out"] = output[0]
        handles.append(block.attn.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.attn.register_forward_hook(post))
    _forward_with_hooks(model, ids, handles)
    visible_slots = torch.arange(T, device=ids.device) // S  # slots written after tokens < i (fresh stream)
    n_vis_slots = visible_slots.clamp(max=N)
    n_vis_tokens = torch.clamp(torch.arange(T, device=ids.device) + 1, max=M)
    has_memory = n_vis_slots > 0
    uniform = (n_vis_slots / (n_vis_slots + n_vis_tokens))[has_memory]
    per_layer, errors = [], []
    for i, (block, cap) in enumerate(zip(blocks, captured)):
        attn = block.attn
        x, n_tokens = cap["x"], int(cap["n_tokens"])
        if n_tokens != T:
            raise RuntimeError(f"layer {i} saw {n_tokens} tokens, expected {T}")
        H, dh = attn.n_heads, attn.d_head
        L = x.shape[1]
        q, k, v = attn.c_attn(x).view(B, L, 3, H, dh).permute(2, 0, 3, 1, 4)
        rope = cap.get("rope")
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.float(), k.float(), v.float()
        slot_k, slot_v = k[:, :, T:], v[:, :, T:]
        W = slot_k.shape[2]
        mass = torch.zeros(B, H, T, device=ids.device)
        outs = torch.zeros(B, H, T, dh, device=ids.device) if check else None
        block_size = max(1, min(T, (1 << 24) // max(1, B * H * (M + W + 64))))
        for a in range(0, T, block_size):
            e = min(T, a + block_size)
            lo = max(0, a - M + 1)
            qi = torch.arange(a, e, device=ids.device)[:, None]
            j = torch.arange(lo, e, device=ids.device)[None, :]
            w = torch.arange(W, device=ids.device)[None, :]
            vis = visible_slots[a:e, None]
            mask = torch.cat([(w < vis) & (w >= vis - N), (j <= qi) & (j > qi - M)], 1)
            keys = torch.cat([slot_k, k[:, :, lo:e]], 2)
            scores = (q[:, :, a:e] @ keys.transpose(-1, -2)) / math.sqrt(dh)
            probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
            mass[:, :, a:e] = probs[..., :W].sum(-1)
            if check:
                outs[:, :, a:e] = probs @ torch.cat([slot_v, v[:, :, lo:e]], 2)
        if check:
            weight = attn.c_proj.weight
            rebuilt = attn.c_proj(outs.transpose(1, 2).reshape(B, T, H * dh).to(weight.dtype)).float()
            actual = cap["out"][:, :T].float()
            error = float((rebuilt - actual).abs().max() / actual.abs().max().clamp(min=1e-12))
            tolerance = 1e-3 if x.dtype == torch.float32 else 5e-2
            if not error <= tolerance:
                raise RuntimeError(f"layer {i}: the recomputed attention does not reproduce the layer's output "
                                   f"(relative error {error:.2e}); the attention semantics changed and the "
                                   "diagnostic must follow")
            errors.append(error)
        with_mem = mass[:, :, has_memory]
        per_layer.append({
            "layer": i,
            "mass": float(mass.mean()),
            "mass_with_memory": _num(with_mem.mean()) if with_mem.numel() else None,
            "per_head": _nums(with_mem.mean((0, 2))) if with_mem.numel() else None,
            "max": float(mass.max()),
        })
    return {"n_layers": len(blocks), "n_tokens_with_memory": int(has_memory.sum()),
            "uniform": _num(uniform.mean()) if uniform.numel() else None,
            "per_layer": per_layer, "check_max_error": max(errors) if errors else None}


# ----------------------------------------------------------------------------- 5. everything
def passkey_prompts(task_config, n_samples: int, seed: int = 0, vocab_size: int | None = None) -> dict:
    """`n_samples` synthetic passkey prompts of task_config.seq_len tokens (random filler), the key
    at depths spread evenly from the start to just before the question. Returns input_ids (B, T),
    targets (B, T) (-100 except the last position: the first key symbol), key_positions (B,),
    depths (B,)."""
    from smt.evaluation.passkey import synthetic_passkey, synthetic_vocab_size
    from smt.evaluation.tasks import TaskConfig

    task = task_config
    if isinstance(task, (dict, str)):
        task = TaskConfig.from_dict(task)
    if getattr(task, "name", "passkey") != "passkey":
        raise ValueError(f"memory diagnostics use passkey prompts; got task {task.name!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    need = synthetic_vocab_size(task.n_values, task.n_filler)
    if vocab_size is not None and need > vocab_size:
        raise ValueError(f"the prompts use {need} token ids (n_values={task.n_values}, n_filler={task.n_filler}) "
                         f"but the model's vocabulary has {vocab_size}; lower n_filler")
    generator = torch.Generator().manual_seed(seed)
    depths = np.linspace(0.0, 1.0, n_samples) if n_samples > 1 else np.array([0.5])
    samples = [synthetic_passkey(task.seq_len, float(d), generator, task.key_length, task.n_values, task.n_filler,
                                 n_distractors=0, filler="random") for d in depths]
    ids = torch.stack([s.input_ids for s in samples])
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, -1] = torch.stack([s.answer[0] for s in samples])
    return {"input_ids": ids, "targets": targets, "key_positions": torch.tensor([s.key_start for s in samples]),
            "depths": torch.tensor(depths)}


def write_gate_usage(model, input_ids, key_positions) -> dict:
    """The write gates (`write_gate: true`) on these prompts: for the writes whose window holds the
    key token and for every other write, the mean gate and the shares with g == 0 (closed: the state
    is kept exactly) and g == 1. A hard gate (`write_gate_sparsity > 0`) reaches both ends exactly."""
    _require_memory(model, "write_gate_usage")
    if not model.config.write_gate:
        raise ValueError("write_gate_usage needs a gated memory (write_gate: true)")
    ids = _ids(model, input_ids)
    keys = _positions(key_positions, ids.shape[0], "key_positions", ids.shape[1])
    with torch.no_grad(), _diagnostic_mode(model):
        _, aux = model(ids)
    gates = aux["write_gates"].float().cpu()  # (B, W)
    cfg = model.config
    last = write_tokens(gates.shape[1], cfg.stride)[None]  # the token that triggers each write
    covers = (last >= keys.cpu()[:, None]) & (last - (cfg.m_input_tokens - 1) <= keys.cpu()[:, None])

    def usage(chosen: Tensor) -> dict:
        g = gates[chosen]
        if not g.numel():
            return {"n": 0, "mean": None, "closed": None, "open": None}
        return {"n": int(g.numel()), "mean": _num(g.mean()), "closed": _num((g == 0).float().mean()),
                "open": _num((g == 1).float().mean())}

    return {"hard": bool(cfg.write_gate_sparsity > 0), "key_writes": usage(covers), "other_writes": usage(~covers)}


def diagnose(model, task_config, n_samples: int = 64, seed: int = 0) -> dict:
    """All memory diagnostics on `n_samples` passkey prompts (see `passkey_prompts`), one JSON-
    serialisable dict: model (shape), prompts, gradient, key_pooling, retention, attention_mass
    (each as its function returns it, None when it does not apply), write_gates (for a gated memory,
    else None), skipped (name -> reason).

    A model without memory raises ValueError, except a Mamba LM, whose SSM retention (per token)
    is still measured."""
    cfg = model.config
    has_memory = bool(getattr(model, "n_slots", 0))
    has_ssm = hasattr(getattr(model, "ssm", None), "layers")
    if not has_memory and not has_ssm:
        raise ValueError(f"this model (arch={cfg.arch!r}) has no memory and no SSM: none of the memory "
                         "diagnostics apply (gradient at the writes, key pooling weight, SSM retention, "
                         "attention mass on memory slots); they need arch smt with n_ssm_outputs > 0")
    prompts = passkey_prompts(task_config, n_samples, seed, cfg.vocab_size)
    ids, targets, keys = prompts["input_ids"], prompts["targets"], prompts["key_positions"]
    T = ids.shape[1]
    result: dict = {
        "model": {"arch": cfg.arch, "n_slots": int(getattr(model, "n_slots", 0)),
                  "m_input_tokens": cfg.m_input_tokens,
                  "stride": cfg.stride, "n_layers": cfg.transformer_n_layers, "ssm_type": cfg.ssm_type,
                  "ssm_n_layers": cfg.ssm_n_layers, "pool_over_memory": bool(cfg.pool_over_memory),
                  "d_model": cfg.d_model, "vocab_size": cfg.vocab_size},
        "prompts": {"n_samples": int(ids.shape[0]), "seq_len": T, "seed": seed,
                    "key_positions": keys.tolist(), "key_distance": (T - 1 - keys).tolist(),
                    "depths": prompts["depths"].tolist()},
        "gradient": None, "key_pooling": None, "retention": None, "attention_mass": None, "write_gates": None,
        "skipped": {},
    }
    if has_memory and cfg.memory == "token_rate":
        reason = "memory 'token_rate' writes every token into its SSM: there is no pooled write to measure"
        result["attention_mass"] = memory_attention_mass(model, ids)
        result["skipped"] = {"gradient": reason, "key_pooling": reason, "write_gates": reason}
    elif has_memory:
        result["gradient"] = write_gradient_by_distance(model, ids, targets)
        result["key_pooling"] = key_pooling_weight(model, ids, keys)
        result["attention_mass"] = memory_attention_mass(model, ids)
        if cfg.write_gate:
            result["write_gates"] = write_gate_usage(model, ids, keys)
        result["prompts"]["accuracy"] = float(np.mean(result["gradient"]["correct"]))
    else:
        reason = f"arch {cfg.arch!r} has no memory writes or slots"
        result["skipped"] = {"gradient": reason, "key_pooling": reason, "attention_mass": reason}
    result["retention"] = ssm_retention(model, ids, keys, seed=seed)
    return result


def summarize(result: dict) -> str:
    """A short readable summary of `diagnose`'s result."""
    m, p = result["model"], result["prompts"]
    if m["n_slots"]:
        shape = (f"model: arch={m['arch']} N={m['n_slots']} M={m['m_input_tokens']} S={m['stride']}, "
                 f"{m['ssm_n_layers']} {m['ssm_type']} SSM layers, pooling over "
                 f"{'memory + tokens' if m['pool_over_memory'] else 'tokens only'}")
    else:
        shape = (f"model: arch={m['arch']}, {m['ssm_n_layers']} {m['ssm_type']} SSM layers over the tokens "
                 "(no memory slots)")
    lines = [shape,
             f"prompts: {p['n_samples']} passkey prompts of {p['seq_len']} tokens, key distance "
             f"{min(p['key_distance'])}..{max(p['key_distance'])} tokens"
             + (f", last-token accuracy {p['accuracy']:.1%}" if "accuracy" in p else "")]

    def fmt(x, spec=".3g"):
        return "n/a" if x is None else format(x, spec)

    g = result.get("gradient")
    if g:
        parts = [f"({row['lo']}, {row['hi'] if row['hi'] is not None else 'inf'}]: "
                 f"{fmt(row['input_grad_norm_mean'])}" for row in g["by_bin"] if row["n"]]
        lines.append("gradient norm at the SSM input by write distance (tokens): " + "; ".join(parts))
    k = result.get("key_pooling")
    if k:
        s = k["summary"]
        uniform = s["uniform_visible"]  # over the positions the covering writes could weigh
        ratio = None if s["max"] is None or not uniform else s["max"] / uniform
        lines.append(f"pooling weight on the key: max {fmt(s['max'])}, mean {fmt(s['mean'])} over covering writes "
                     f"vs uniform {fmt(uniform)} (over the positions a write can weigh) and other tokens "
                     f"{fmt(s['other_token_mean'])} ({fmt(ratio, '.2f')}x uniform)")
    r = result.get("retention")
    if r and r["overall"]:
        o = r["overall"]
        kind = r["kind"] + (", gated writes" if r.get("gated") else "")
        lines.append(f"SSM retention per {r['unit']} ({kind}): median {fmt(o['retention']['p50'], '.4f')} "
                     f"[p5 {fmt(o['retention']['p5'], '.4f')}, p95 {fmt(o['retention']['p95'], '.4f')}], half-life "
                     f"median {fmt(o['half_life']['p50'])} {r['unit']}s [p95 {fmt(o['half_life']['p95'])}]")
        acc = r.get("accumulated")
        if acc and acc["n_prompts"]:
            steps = [n for n in acc["n_steps"] if n is not None and n > 0]
            medians = [x for x in acc["per_sample_median"] if x is not None]
            lines.append(f"retention accumulated from the key's {r['unit']} to the question's: median "
                         f"{fmt(float(np.median(medians)))} over {min(steps)}..{max(steps)} {r['unit']}s "
                         f"({acc['n_prompts']} prompts)")
    a = result.get("attention_mass")
    if a:
        masses = ", ".join(fmt(row["mass_with_memory"], ".3f") for row in a["per_layer"])
        lines.append(f"attention mass on memory slots per layer (tokens that see a slot): {masses} "
                     f"(uniform over the window: {fmt(a['uniform'], '.3f')})")
    w = result.get("write_gates")
    if w:
        k, o = w["key_writes"], w["other_writes"]
        lines.append(f"write gates{' (hard)' if w['hard'] else ''}: writes holding the key mean {fmt(k['mean'])}, "
                     f"closed {fmt(k['closed'], '.1%')}; other writes mean {fmt(o['mean'])}, closed "
                     f"{fmt(o['closed'], '.1%')}")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)


def plot_diagnostics(result: dict, out_dir: str | Path) -> list[Path]:
    """PNGs for the parts present in `result`: gradient_by_distance.png (log y),
    key_pooling_weight.png, retention_histogram.png, attention_mass.png (`diagnostics_figures`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [save_figure(fig, out / name) for name, fig in diagnostics_figures(result).items()]


def diagnostics_figures(result: dict) -> dict:
    """The pictures of `plot_diagnostics` as matplotlib Figures (not yet saved), by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict = {}
    window = result["model"]["m_input_tokens"]

    def save(fig, name: str) -> None:
        figures[name] = fig

    g = result.get("gradient")
    if g:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        dist = np.asarray(g["distance"], dtype=float).reshape(-1)
        values = np.asarray([np.nan if v is None else v for row in g["input_grad_norm"] for v in row])
        keep = (dist > 0) & (values > 0)
        ax.scatter(dist[keep], values[keep], s=6, alpha=0.25, color="tab:blue", label="input (pooled), per write")
        rows = [r for r in g["by_distance"] if r["distance"] > 0]
        x = [r["distance"] for r in rows]
        for name, color, label in (("input_grad_norm", "tab:blue", "SSM input (mean)"),
                                   ("output_grad_norm", "tab:orange", "SSM output (mean)"),
                                   ("slot_grad_norm", "tab:green", "slot, read by the transformer (mean)")):
            y = [r.get(f"{name}_mean") for r in rows]
            y = [np.nan if v is None or v <= 0 else v for v in y]
            if np.isfinite(y).any():
                ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
        ax.axvline(window, color="grey", linestyle=":", label=f"window M={window}")
        ax.set_yscale("log")
        ax.set_xlabel("distance of the write from the scored position (tokens)")
        ax.set_ylabel("gradient norm")
        ax.set_title("gradient of the loss at the memory writes")
        ax.legend(fontsize=8)
        save(fig, "gradient_by_distance.png")
    k = result.get("key_pooling")
    if k:
        s = k["per_sample"]
        dist = np.asarray(s["distance"], dtype=float)
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for name, color, label in (("max", "tab:red", "max over covering writes"),
                                   ("mean", "tab:blue", "mean over covering writes"),
                                   ("other_token_mean", "tab:grey", "other tokens (mean)")):
            y = np.asarray([np.nan if v is None else v for v in s[name]])
            ax.scatter(dist, y, s=10, color=color, label=label, alpha=0.7)
        # uniform over the positions the covering writes could weigh (a pooling over tokens only never
        # weighs a slot, so 1/(N + M) would understate it)
        visible = k["summary"].get("uniform_visible")
        ax.axhline(visible if visible is not None else k["uniform"], color="black", linestyle="--", linewidth=0.8,
                   label="uniform over the positions a write can weigh" if visible is not None else "uniform 1/(N+M)")
        ax.set_xlabel("key distance from the question (tokens)")
        ax.set_ylabel("pooling weight on the key")
        ax.set_title("attention pooling on the key token")
        ax.legend(fontsize=8)
        save(fig, "key_pooling_weight.png")
    r = result.get("retention")
    if r and r["layers"]:
        edges = np.asarray(r["half_life_bins"])
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        counts = np.asarray([layer["histogram"] for layer in r["layers"]], dtype=float)
        ax.bar(edges[:-1], counts.sum(0), width=np.diff(edges), align="edge", color="tab:purple", alpha=0.8)
        acc = r.get("accumulated")
        if acc:
            steps = [n for n in acc["n_steps"] if n is not None and n > 0]
            if steps:
                ax.axvline(np.log10(np.median(steps)), color="black", linestyle="--",
                           label=f"median key-to-question distance ({np.median(steps):.0f} {r['unit']}s)")
                ax.legend(fontsize=8)
        ax.set_xlabel(f"log10 half-life (in {r['unit']}s); clipped to [{edges[0]:.0f}, {edges[-1]:.0f}]")
        ax.set_ylabel("count (prompt x step x channel x state)" if r["kind"] == "mamba" else "channels")
        ax.set_title(f"SSM retention ({r['kind']}, all {len(r['layers'])} layers)")
        save(fig, "retention_histogram.png")
    a = result.get("attention_mass")
    if a:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        layers = [row["layer"] for row in a["per_layer"]]
        mass = [row["mass_with_memory"] or 0.0 for row in a["per_layer"]]
        ax.bar(layers, mass, color="tab:orange", label="mass on memory slots (tokens that see a slot)")
        if a["uniform"] is not None:
            ax.axhline(a["uniform"], color="black", linestyle="--", linewidth=0.8, label="uniform over the window")
        ax.set_xticks(layers)
        ax.set_xlabel("transformer layer")
        ax.set_ylabel("attention mass")
        ax.set_title("how much the transformer reads the memory")
        ax.legend(fontsize=8)
        save(fig, "attention_mass.png")
    return figures
