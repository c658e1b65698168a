"""Model FLOPs of a training step, by part: what MFU divides by, and the FLOP ceiling of a speedup.

Model FLOPs of one training step (forward + backward = 3x forward, matmuls only), for B
sequences of T tokens, W = T // S writes, transformer of L layers, width d, FFN width f,
vocabulary V, window of M tokens and N slots:
  blocks     6 * L * (4 d^2 + 2 d f) * B (T + W)       (slots travel through the blocks too)
  attention  12 * L * d * B (T (M + N) + W N)          (QK^T and AV over the visible keys only)
  lm_head    6 * d * V * B T                           (tied to the embedding; lookups are free)
  pooling    6 * 2 d^2 * B T  +  6 * 2 d^2 * B W       (key/value per token; out + memory_proj per write)
  ssm        6 * P_ssm * B W                           (P_ssm: the Mamba stack's matmul weights)
The full-attention baseline's attention term is 12 * L * d * B * T (T + 1) / 2 (causal keys) and
the SWA baseline's is 12 * L * d * B * T * M. Elementwise work (norms, scan, softmax) is not
counted, as in the usual 6 * params * tokens convention.
"""

from __future__ import annotations


def ssm_matmul_params(config) -> int:
    d, di, ds, r = config.d_model, config.d_inner, config.ssm_d_state, config.dt_rank
    if config.ssm_type == "simple":
        return config.ssm_n_layers * 2 * d * di
    return config.ssm_n_layers * (d * 2 * di + di * (r + 2 * ds) + r * di + di * d)


def model_flops(config, context: int, batch: int = 1) -> dict[str, float]:
    """Training-step FLOPs by part (see the module docstring for the formula)."""
    L, d, f, V = config.transformer_n_layers, config.d_model, config.ffn_dim, config.vocab_size
    T, B, M, N = context, batch, config.m_input_tokens, config.n_ssm_outputs
    memory = config.has_memory
    W = T // config.stride if memory else 0
    n_keys = {"gpt": (T + 1) / 2, "swa": M}.get(config.arch, M + (N if memory else 0))
    parts = {
        "blocks": 6 * L * (4 * d * d + 2 * d * f) * B * (T + W),
        "attention": 12 * L * d * B * (T * n_keys + W * N),
        "lm_head": 6 * d * V * B * T,
        "pooling": 6 * 2 * d * d * B * (T + W) if memory else 0,
        "ssm": 6 * ssm_matmul_params(config) * B * W,
    }
    parts["total"] = sum(parts.values())
    return parts
