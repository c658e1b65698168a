"""Chunked windowed attention against the dense-mask oracle, across block sizes and splits."""

from __future__ import annotations

import pytest
import torch

from smt import StrideHybridConfig, StrideHybridModel


@pytest.mark.parametrize("block", [1, 5, 8, 64])
def test_chunked_attention_matches_dense_in_values_and_gradients(block):
    torch.manual_seed(0)
    dense_cfg = StrideHybridConfig.tiny(attention_impl="dense")
    dense = StrideHybridModel(dense_cfg)
    chunked = StrideHybridModel(dense_cfg.replace(attention_impl="chunked", attention_block_size=block))
    chunked.load_state_dict(dense.state_dict())
    ids = torch.randint(0, dense_cfg.vocab_size, (2, 29))
    out_d, aux_d = dense(ids[:, :13])
    out_d2, _ = dense(ids[:, 13:], state=aux_d["state"])
    out_c, aux_c = chunked(ids[:, :13])
    out_c2, _ = chunked(ids[:, 13:], state=aux_c["state"])
    torch.testing.assert_close(torch.cat([out_c, out_c2], 1), torch.cat([out_d, out_d2], 1), rtol=1e-5, atol=1e-5)
    g_d = torch.autograd.grad(out_d2.square().mean(), list(dense.transformer.parameters()))
    g_c = torch.autograd.grad(out_c2.square().mean(), list(chunked.transformer.parameters()))
    for got, want in zip(g_c, g_d):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
