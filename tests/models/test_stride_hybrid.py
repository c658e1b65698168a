"""The public model API: quick start, parameter counts, generation, bad input."""

from __future__ import annotations

import pytest
import torch

from smt import StreamState, StrideHybridConfig, StrideHybridModel
from tests.models.helpers import random_ids, tiny_model


def test_quick_start_end_to_end(capsys):
    config = StrideHybridConfig(n_ssm_outputs=15, m_input_tokens=50, stride=16, device="cpu",
                                vocab_size=512, d_model=64, transformer_n_layers=2, n_heads=4, ssm_n_layers=2)
    text = config.summary()
    assert "15 memory slots + 50 tokens = 65" in text and "every 16 tokens" in text
    assert "15 memory slots" in capsys.readouterr().out
    model = StrideHybridModel(config)
    params = model.count_parameters()
    assert set(params["breakdown"]) == {"embedding", "transformer", "attention_pooling", "ssm", "lm_head"}
    input_ids = torch.randint(0, 512, (2, 100))
    logits, aux = model(input_ids)
    assert logits.shape == (2, 100, 512)
    assert aux["n_writes"] == 100 // 16
    assert aux["attention_weights"].shape == (2, 6, 65)
    prompt = torch.randint(0, 512, (1, 10))
    out = model.generate(input_ids=prompt, max_new_tokens=50, temperature=0.8, top_p=0.95)
    assert out.shape == (1, 60) and torch.equal(out[:, :10], prompt)


def test_parameter_counts_are_honest():
    model = tiny_model()
    params = model.count_parameters()
    assert params["lm_head_tied"] and params["breakdown"]["lm_head"] == 0
    assert params["total"] == sum(params["breakdown"].values())
    assert params["total"] == sum(p.numel() for p in model.parameters())
    untied = tiny_model(tie_embeddings=False).count_parameters()
    assert untied["breakdown"]["lm_head"] == 256 * 64 and not untied["lm_head_tied"]
    assert untied["total"] == params["total"] + 256 * 64


def test_default_preset_instantiates_with_the_documented_embedding_size():
    config = StrideHybridConfig.wikitext103()
    assert (config.n_ssm_outputs, config.m_input_tokens, config.stride) == (15, 50, 16)
    model = StrideHybridModel(config)
    params = model.count_parameters()
    assert params["breakdown"]["embedding"] == 50280 * 768  # 38.6M
    assert round(params["breakdown"]["embedding"] / 1e6, 1) == 38.6
    assert len(model.transformer.h) == 12 and len(model.ssm.layers) == 24


@pytest.mark.parametrize("name,window", [("wikitext103", (15, 50, 16)), ("pg19", (20, 80, 25)),
                                         ("small", (10, 30, 10))])
def test_presets(name, window):
    config = StrideHybridConfig.preset(name)
    assert (config.n_ssm_outputs, config.m_input_tokens, config.stride) == window
    assert StrideHybridConfig.preset(name, d_model=128, n_heads=4).d_model == 128


def test_greedy_generation_is_deterministic_and_matches_argmax():
    model = tiny_model()
    prompt = random_ids(2, 9)
    first = model.generate(prompt, max_new_tokens=20, temperature=0)
    second = model.generate(prompt, max_new_tokens=20, temperature=0)
    assert torch.equal(first, second)
    # each greedy token is the argmax of the model's logits on the sequence so far
    logits, _ = model(first[:, :-1])
    torch.testing.assert_close(logits[:, 8:].argmax(-1), first[:, 9:], rtol=0, atol=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=20, temperature=1.0, top_k=1), first)


def test_seeded_sampling_is_reproducible():
    model = tiny_model()
    prompt = random_ids(3, 5)
    a = model.generate(prompt, max_new_tokens=30, temperature=1.0, seed=7)
    b = model.generate(prompt, max_new_tokens=30, temperature=1.0, seed=7)
    c = model.generate(prompt, max_new_tokens=30, temperature=1.0, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(model.generate(prompt, 10, generator=g1), model.generate(prompt, 10, generator=g2))


def test_top_p_keeps_only_the_nucleus():
    from smt.models.generation import sample_next

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    drawn = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert drawn == {0, 1}
    drawn = {int(sample_next(logits, 1.0, top_k=3, generator=g)) for _ in range(300)}
    assert drawn == {0, 1, 2}


def test_eos_stops_rows_and_pads_them():
    model = tiny_model()
    prompt = random_ids(2, 6)
    greedy = model.generate(prompt, max_new_tokens=12, temperature=0)
    eos = int(greedy[0, 9])  # the 4th generated token of row 0
    out = model.generate(prompt, max_new_tokens=12, temperature=0, eos_token_id=eos)
    first_eos = (out[0, 6:] == eos).nonzero()[0, 0]
    assert torch.all(out[0, 6 + first_eos:] == eos)
    stopped = model.generate(prompt[:1], max_new_tokens=12, temperature=0, stop_token_ids=[eos])
    assert stopped.shape[1] == 6 + int(first_eos) + 1 and stopped[0, -1] == eos


@pytest.mark.slow
def test_state_size_does_not_grow_while_generating_2000_tokens():
    model = tiny_model()
    prompt = random_ids(1, 4)
    sizes = []
    state = None
    out, state = model.generate(prompt, max_new_tokens=10, temperature=0, return_state=True)
    sizes.append(state.nbytes())
    out, state = model.generate(out[:, -1:], max_new_tokens=1990, temperature=1.0, seed=0, state=state,
                                return_state=True)
    sizes.append(state.nbytes())
    assert sizes[0] == sizes[1] == model.init_state(1).nbytes()
    assert int(state.position[0]) == 4 + 10 + 1 + 1990
    assert out.shape == (1, 1 + 1990)


def test_reset_rows_starts_a_fresh_stream():
    model = tiny_model()
    ids = random_ids(2, 24)
    _, aux = model(ids)
    fresh = aux["state"].reset_rows(torch.tensor([True, False]))
    more = random_ids(2, 8, seed=5)
    logits, _ = model(more, state=fresh)
    alone, _ = model(more[:1])
    torch.testing.assert_close(logits[:1], alone, rtol=1e-5, atol=1e-5)
    carried, _ = model(more, state=aux["state"])
    torch.testing.assert_close(logits[1:], carried[1:], rtol=1e-5, atol=1e-5)


BAD_IDS = [
    (torch.tensor([[1.0, 2.0]]), TypeError, "integer token ids"),
    (torch.tensor([[True, False]]), TypeError, "integer token ids"),
    ([[1, 2, 3]], TypeError, "torch.Tensor"),
    (torch.tensor([1, 2, 3]), ValueError, "input_ids\\[None\\]"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "empty"),
    (torch.zeros(0, 4, dtype=torch.long), ValueError, "empty"),
    (torch.tensor([[1, -1]]), ValueError, "token id -1 is out of range"),
    (torch.tensor([[1, 256]]), ValueError, "token id 256 is out of range for vocab_size=256"),
]


@pytest.mark.parametrize("ids,error,message", BAD_IDS)
def test_bad_token_ids_are_named(ids, error, message):
    with pytest.raises(error, match=message):
        tiny_model()(ids)


def test_int32_ids_are_accepted():
    model = tiny_model()
    ids = random_ids(1, 9)
    torch.testing.assert_close(model(ids.int())[0], model(ids)[0])


def test_bad_states_are_named():
    model = tiny_model()
    _, aux = model(random_ids(2, 8))
    with pytest.raises(ValueError, match="state holds 2 streams"):
        model(random_ids(3, 4), state=aux["state"])
    with pytest.raises(TypeError, match="StreamState"):
        model(random_ids(2, 4), state={"position": 0})
    other = tiny_model(m_input_tokens=6)
    with pytest.raises(ValueError, match="different config"):
        other(random_ids(2, 4), state=aux["state"])
    state = aux["state"]
    state.position[1] += 1
    with pytest.raises(ValueError, match="modulo stride"):
        model(random_ids(2, 4), state=state)


def test_learned_positions_refuse_long_sequences():
    model = tiny_model(position="learned", max_position_embeddings=32)
    model(random_ids(1, 32))
    with pytest.raises(ValueError, match="max_position_embeddings=32.*position='rope'"):
        model(random_ids(1, 33))


@pytest.mark.parametrize("kwargs,message", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
])
def test_bad_generation_arguments(kwargs, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        model.generate(random_ids(1, 3), **{"max_new_tokens": 3, **kwargs})


def test_zero_new_tokens_returns_the_prompt():
    prompt = random_ids(1, 5)
    assert torch.equal(tiny_model().generate(prompt, max_new_tokens=0), prompt)


def test_baseline_archs_point_to_the_factory():
    with pytest.raises(ValueError, match="build_model"):
        StrideHybridModel(StrideHybridConfig.tiny(arch="gpt"))


def test_states_with_bad_positions_or_dtypes_are_named_or_converted():
    """A negative or non-integer position is refused by name; a float64 (or bfloat16) state
    continues the float32 model exactly as the float32 state does."""
    model = tiny_model()
    ids = random_ids(2, 8)
    _, aux = model(ids)
    state = aux["state"]
    bad = StreamState(state.position - 20, state.buffers)
    with pytest.raises(ValueError, match="negative positions"):
        model(random_ids(2, 4), state=bad)
    with pytest.raises(ValueError, match="torch.long"):
        model(random_ids(2, 4), state=StreamState(state.position.float(), state.buffers))
    with pytest.raises(ValueError, match="dtype torch.int64"):
        model(random_ids(2, 4), state=StreamState(state.position, {**state.buffers,
                                                                   "slot_kv": state.buffers["slot_kv"].long()}))
    more = random_ids(2, 4)
    expected, _ = model(more, state=state)
    wide = StreamState(state.position, {k: v.double() for k, v in state.buffers.items()})
    got, _ = model(more, state=wide)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_state_is_checked_against_the_model_as_it_is_now_after_a_cast():
    """The template a carried state is checked against is kept between calls (a decode step does not
    rebuild it) but follows the model: after model.double() the state continues in float64."""
    model = tiny_model()
    ids = random_ids(1, 8)
    _, aux = model(ids)
    _, aux = model(random_ids(1, 1), state=aux["state"])  # the template is kept now
    model.double()
    _, aux = model(random_ids(1, 1), state=aux["state"])
    assert aux["state"].buffers["token_kv"].dtype == torch.float64
    fresh = model.init_state(1)
    for name, value in aux["state"].buffers.items():
        assert value.dtype == fresh.buffers[name].dtype, name
