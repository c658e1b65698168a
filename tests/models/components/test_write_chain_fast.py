"""The fast write chain against the explicit-window reference: slots, weights and gradients."""

from __future__ import annotations

import torch

from smt import StrideHybridConfig, StrideHybridModel
from smt.models.memory.chain import write_chain_reference


def test_model_write_chain_matches_reference_with_gradients():
    torch.manual_seed(0)
    config = StrideHybridConfig.tiny(pool_over_memory=True, write_gate=False)  # the seed's chain
    model = StrideHybridModel(config)
    ids = torch.randint(0, config.vocab_size, (2, 23))
    _, aux = model(ids)
    params = [p for n, p in model.named_parameters() if n.startswith(("ssm.", "pooling.", "memory_proj."))]
    probe = torch.randn_like(aux["memory"])
    g_fast = torch.autograd.grad((aux["memory"] * probe).sum(), params)

    embeddings = model.wte(ids)
    slots, weights = write_chain_reference(model.pooling, model.ssm, lambda out, w: model.memory_proj(out),
                                           embeddings, config.n_ssm_outputs, config.m_input_tokens, config.stride)
    g_ref = torch.autograd.grad((slots * probe).sum(), params)
    torch.testing.assert_close(aux["memory"], slots, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux["attention_weights_per_head"], weights, rtol=1e-5, atol=1e-6)
    for got, want in zip(g_fast, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)
