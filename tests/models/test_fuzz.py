"""Property-based fuzzing of configs, token tensors and generation arguments.

Every input either works (finite logits of the right shape) or raises ValueError/TypeError with
a message; never a crash deep inside torch, a hang, or silent garbage.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smt import StrideHybridConfig, StrideHybridModel
from tests.models.helpers import tiny_model

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = tiny_model()

small_ints = st.one_of(st.integers(-3, 12), st.sampled_from([2.5, True, None, "4"]))


@FUZZ
@given(n=small_ints, m=small_ints, s=small_ints, d=st.sampled_from([0, 8, 12, 16, 30]),
       heads=st.integers(-1, 5), ssm=st.sampled_from(["mamba", "simple", "lstm"]),
       pos=st.sampled_from(["rope", "learned", "none"]))
def test_random_configs_build_or_explain(n, m, s, d, heads, ssm, pos):
    try:
        config = StrideHybridConfig.tiny(n_ssm_outputs=n, m_input_tokens=m, stride=s, d_model=d,
                                         n_heads=heads, pooling_heads=1, ssm_type=ssm, position=pos,
                                         ssm_n_layers=1)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    model = StrideHybridModel(config).eval()
    logits, aux = model(torch.randint(0, 256, (2, 23)))
    assert logits.shape == (2, 23, 256) and torch.isfinite(logits).all()
    assert aux["n_writes"] == (23 // config.stride if config.n_ssm_outputs > 0 else 0)


@FUZZ
@given(n=st.integers(0, 9), m=st.integers(1, 12), s=st.integers(1, 12), heads=st.sampled_from([1, 2, 4]),
       ssm=st.sampled_from(["mamba", "simple"]), pos=st.sampled_from(["rope", "learned"]),
       pool_over_memory=st.booleans(), length=st.integers(1, 40))
def test_random_valid_configs_run_and_keep_the_invariants(n, m, s, heads, ssm, pos, pool_over_memory, length):
    config = StrideHybridConfig.tiny(n_ssm_outputs=n, m_input_tokens=m, stride=s, n_heads=heads,
                                     pooling_heads=1, ssm_type=ssm, position=pos, ssm_n_layers=1,
                                     pool_over_memory=pool_over_memory)
    model = StrideHybridModel(config).eval()
    ids = torch.randint(0, 256, (2, length))
    logits, aux = model(ids)
    assert torch.isfinite(logits).all()
    assert aux["n_writes"] == (length // s if n > 0 else 0)
    cut = length // 2
    if cut:
        first, mid = model(ids[:, :cut])
        second, _ = model(ids[:, cut:], state=mid["state"])
        torch.testing.assert_close(torch.cat([first, second], 1), logits, rtol=1e-5, atol=1e-5)


token_tensors = st.builds(
    lambda b, t, low, span, dtype: torch.randint(low, low + span, (b, t)).to(dtype),
    st.integers(0, 40), st.integers(0, 40), st.integers(-5, 255), st.integers(1, 60),
    st.sampled_from([torch.long, torch.int32, torch.int16, torch.uint8, torch.float32, torch.bool]),
)


@FUZZ
@given(ids=token_tensors)
def test_random_token_tensors_run_or_explain(ids):
    try:
        logits, aux = MODEL(ids)
    except (ValueError, TypeError) as error:
        assert str(error)
        bad = (ids.numel() == 0 or ids.dtype in (torch.float32, torch.bool)
               or int(ids.min()) < 0 or int(ids.max()) >= 256)
        assert bad, f"valid input rejected: {error}"
        return
    assert logits.shape == (*ids.shape, 256) and torch.isfinite(logits).all()
    assert aux["n_writes"] == ids.shape[1] // MODEL.config.stride


@FUZZ
@given(temperature=st.one_of(st.floats(-2, 3), st.just(math.nan), st.just(math.inf), st.integers(0, 2)),
       top_p=st.one_of(st.none(), st.floats(-0.5, 1.5)), top_k=st.one_of(st.none(), st.integers(-1, 300)),
       new=st.integers(-2, 6))
def test_random_generation_arguments(temperature, top_p, top_k, new):
    prompt = torch.randint(0, 256, (2, 5))
    try:
        out = MODEL.generate(prompt, max_new_tokens=new, temperature=temperature, top_p=top_p,
                             top_k=top_k, seed=0)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    assert out.shape == (2, 5 + new)
    assert int(out.min()) >= 0 and int(out.max()) < 256
