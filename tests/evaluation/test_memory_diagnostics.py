"""Memory diagnostics (smt.evaluation.memory_diagnostics) and `smt diagnose` on tiny random models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smt import StrideHybridConfig
from smt.cli import main
from smt.evaluation import memory_diagnostics as md
from smt.evaluation.tasks import TaskConfig
from smt.models.baselines import build_model
from smt.models.components import windowed_attention
from tests.models.helpers import seed_design

VOCAB = 32


def tiny(**overrides):
    """The seed's design with the variant's fields (`default=True`: the library's default instead)."""
    torch.manual_seed(0)
    fields = overrides if overrides.pop("default", False) else seed_design(**overrides)
    return build_model(StrideHybridConfig.tiny(vocab_size=VOCAB, **fields)).eval()


def random_ids(batch: int = 3, length: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _memory_flags(model):
    memory = getattr(model, "memory", None)
    return {name: "absent" if memory is None else vars(memory).get(name, "absent")
            for name in ("fused", "record_writes")}


def untouched(model, ids, run):
    """Run a diagnostic and prove it left the model as it was: parameters, modes, the memory's flags
    (fused, record_writes), no hooks or wrappers left, the same logits."""
    model.train()  # dropout is 0: the outputs do not change, but the mode must come back
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    flags_before = _memory_flags(model)
    with torch.no_grad():
        before, _ = model(ids)
    result = run()
    with torch.no_grad():
        after, _ = model(ids)
    assert torch.equal(before, after)
    assert all(torch.equal(p, params[name]) and p.grad is None for name, p in model.named_parameters())
    assert _memory_flags(model) == flags_before
    assert all(m.training for m in model.modules())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    if hasattr(model, "ssm"):
        assert not {"step", "forward", "forward_gated", "forward_keeping_states"} & set(vars(model.ssm))
    model.eval()
    return result


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("overrides, mode", [
    ({}, "loop"), ({"pool_over_memory": False}, "sequence"), ({"ssm_type": "simple"}, "loop"),
    ({"default": True}, "sequence"), ({"memory_read": "slots+state"}, "loop"),
    ({"pool_over_memory": False, "memory_read": "slots+state"}, "sequence"),  # forward_keeping_states
    ({"default": True, "memory_read": "slots+state"}, "sequence"),
    ({"default": True, "ssm_type": "simple"}, "loop"),  # gated writes into a SimpleSSM: step by step
])
def test_gradient_is_causal_and_reaches_earlier_writes(overrides, mode):
    model = tiny(**overrides)
    ids = random_ids()
    targets = torch.full_like(ids, -100)
    scored = [19, 27, 31]  # 19 is the token of write 4: that write must get exactly zero
    for row, q in enumerate(scored):
        targets[row, q] = int(ids[row, (q + 1) % ids.shape[1]])
    result = untouched(model, ids, lambda: md.write_gradient_by_distance(model, ids, targets))
    W = ids.shape[1] // model.config.stride
    assert result["mode"] == mode and result["n_writes"] == W
    assert result["scored_position"] == scored
    assert result["write_token"] == [(k + 1) * 4 - 1 for k in range(W)]
    distance = torch.tensor(result["distance"])
    assert distance.shape == (3, W)
    for name in ("input_grad_norm", "output_grad_norm", "slot_grad_norm"):
        norms = torch.tensor(result[name], dtype=torch.float64)
        assert norms.shape == (3, W) and torch.isfinite(norms).all() and (norms >= 0).all()
        assert (norms[distance <= 0] == 0).all(), name  # causality: exactly zero
    inputs = torch.tensor(result["input_grad_norm"])
    assert (inputs[distance > 0] > 0).any() and (inputs[0, :4] > 0).all()
    assert math.isfinite(result["loss"]) and len(result["correct"]) == 3
    assert sum(row["n"] for row in result["by_distance"]) == 3 * W
    json.dumps(result, allow_nan=False)


def test_gradient_keeps_explicit_memory_flags():
    model = tiny()
    model.memory.fused = True  # an instance attribute must be restored as such
    model.memory.record_writes = False
    ids = random_ids(2, 24)
    targets = torch.full_like(ids, -100)
    targets[:, -1] = 3
    untouched(model, ids, lambda: md.write_gradient_by_distance(model, ids, targets))
    assert vars(model.memory)["fused"] is True and vars(model.memory)["record_writes"] is False


@pytest.mark.parametrize("overrides", [{"default": True}, {"default": True, "memory_read": "slots+state"},
                                       {"pool_over_memory": False, "memory_read": "slots+state"}])
def test_gradient_is_the_same_whichever_path_the_writes_run(overrides, monkeypatch):
    """The gradients come from the model's record of its writes: the same stack without its parallel
    sequence modes (stepped write by write, the reference) gives the same numbers."""
    model = tiny(**overrides)
    ids = random_ids()
    targets = torch.full_like(ids, -100)
    targets[:, -1] = 3
    parallel = md.write_gradient_by_distance(model, ids, targets)
    monkeypatch.setattr(model.ssm, "supports_parallel_gates", False)
    monkeypatch.setattr(model.ssm, "supports_keeping_states", False)
    stepped = md.write_gradient_by_distance(model, ids, targets)
    assert (parallel["mode"], stepped["mode"]) == ("sequence", "loop")
    for name in ("input_grad_norm", "output_grad_norm", "slot_grad_norm"):
        torch.testing.assert_close(torch.tensor(stepped[name]), torch.tensor(parallel[name]), rtol=1e-4, atol=1e-9)


# --------------------------------------------------------------------------- key pooling
def test_key_pooling_weight_matches_an_explicit_recomputation():
    model = tiny()  # N=4, M=8, S=4: write k pools tokens t_k-7..t_k, t_k = 4k+3, at window positions 4..11
    ids = random_ids(4, 30)  # 7 writes (after tokens 3, 7, ..., 27)
    keys = [5, 27, 13, 29]
    result = untouched(model, ids, lambda: md.key_pooling_weight(model, ids, keys))
    model.memory.fused = False  # the reference: the diagnostics run the autograd write chain
    with torch.no_grad():
        _, aux = model(ids)
    w = aux["attention_weights"].double()
    # by hand: (write, window position) of the key in every window that holds it
    cover = {0: [(1, 9), (2, 5)], 1: [(6, 11)], 2: [(3, 9), (4, 5)], 3: []}
    sample = result["per_sample"]
    assert sample["n_covering_writes"] == [2, 1, 2, 0]
    assert sample["distance"] == [29 - k for k in keys]
    for row, pairs in cover.items():
        if not pairs:
            assert sample["max"][row] is None and sample["mean"][row] is None
            continue
        values = torch.stack([w[row, k, i] for k, i in pairs])
        assert sample["max"][row] == pytest.approx(float(values.max()), abs=1e-12)
        assert sample["mean"][row] == pytest.approx(float(values.mean()), abs=1e-12)
        assert 0 <= sample["max"][row] <= 1
    # key 27 at write 6: 8 visible tokens, 4 visible slots
    other = (w[1, 6, 4:].sum() - w[1, 6, 11]) / 7
    assert sample["other_token_mean"][1] == pytest.approx(float(other), abs=1e-12)
    assert sample["uniform_visible"][1] == pytest.approx(1 / 12)
    assert sample["memory_share"][1] == pytest.approx(float(w[1, 6, :4].sum()), abs=1e-12)
    heads = aux["attention_weights_per_head"].double()
    assert sample["max_over_heads"][0] == pytest.approx(float(max(heads[0, 1, :, 9].max(), heads[0, 2, :, 5].max())))
    assert result["uniform"] == pytest.approx(1 / 12) and result["summary"]["n_covered"] == 3
    json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------------------ retention
def test_mamba_retention_in_unit_interval_with_accumulation():
    model = tiny()
    ids = random_ids(3, 32)
    keys = [5, 30, 13]
    result = untouched(model, ids, lambda: md.ssm_retention(model, ids, keys))
    assert result["kind"] == "mamba" and result["unit"] == "write" and result["n_steps"] == 8
    assert len(result["layers"]) == model.config.ssm_n_layers
    for stats in [*result["layers"], result["overall"]]:
        values = [stats["retention"][f"p{p}"] for p in (5, 25, 50, 75, 95)]
        assert all(0 < v <= 1 for v in values) and values == sorted(values)
        assert stats["half_life"]["p50"] > 0 and sum(stats["histogram"]) > 0
    acc = result["accumulated"]
    # key 5: last write holding it is write 2 (token 11); the question (31) sees writes 0..6
    assert acc["key_step"] == [2, 7, 4] and acc["query_step"] == [6, 6, 6] and acc["n_steps"] == [4, -1, 2]
    assert acc["n_prompts"] == 2 and acc["per_sample_median"][1] is None
    for layer in acc["layers"]:
        assert all(0 < v <= 1 for v in layer["retention"].values())
    deltas = md.ssm_step_deltas(model, ids)
    assert len(deltas) == 2 and deltas[0].shape == (3, 8, model.config.d_inner) and (deltas[0] > 0).all()
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("gate", [0.0, 1.0, 0.5])
def test_gated_retention_is_that_of_the_gated_write(gate, monkeypatch):
    """A write with gate g keeps g exp(delta A) + 1 - g of a state: 1 when closed, the plain
    retention when open, and in between the mix, per write and accumulated from key to question."""
    plain_model = tiny(pool_over_memory=False)
    ids, keys = random_ids(3, 32), [5, 30, 13]
    plain = md.ssm_retention(plain_model, ids, keys, max_samples=1 << 30)
    model = tiny(pool_over_memory=False, write_gate=True)
    model.load_state_dict(plain_model.state_dict(), strict=False)  # the same SSM; the gate's own weights
    monkeypatch.setattr(model.pooling, "write_gate", lambda pooled: torch.full(pooled.shape[:1], gate))
    gated = untouched(model, ids, lambda: md.ssm_retention(model, ids, keys, max_samples=1 << 30))
    assert gated["gated"] and not plain["gated"]
    # the gate changes the states, so the later steps' inputs and deltas: recompute from the gated run's
    deltas = md.ssm_step_deltas(model, ids)
    for layer, (ours, delta, mixer) in enumerate(zip(gated["layers"], deltas, model.ssm.layers)):
        plain_retention = torch.exp(delta.double()[..., None] * -torch.exp(mixer.mixer.A_log.double()))
        expected = torch.quantile((gate * plain_retention + 1 - gate).flatten(), 0.5).item()
        assert ours["retention"]["p50"] == pytest.approx(expected, rel=1e-6), layer
    acc = gated["accumulated"]["layers"][0]["retention"]["p50"]
    if gate == 0.0:
        assert acc == 1.0
    elif gate == 1.0:
        assert acc == pytest.approx(plain["accumulated"]["layers"][0]["retention"]["p50"], rel=1e-6)
    else:
        assert plain["accumulated"]["layers"][0]["retention"]["p50"] < acc < 1.0


def test_mamba_lm_deltas_equal_the_mixer_maths():
    model = tiny(arch="mamba")
    ids = random_ids(2, 12)
    deltas = untouched(model, ids, lambda: md.ssm_step_deltas(model, ids))
    layer = model.ssm.layers[0]
    mixer = layer.mixer
    with torch.no_grad():
        x, _ = mixer.in_proj(layer.norm(model.wte(ids))).chunk(2, dim=-1)
        x = F.conv1d(F.pad(x.transpose(1, 2), (mixer.d_conv - 1, 0)), mixer.conv1d.weight, mixer.conv1d.bias,
                     groups=mixer.d_inner)
        dt = mixer.x_proj(F.silu(x).transpose(1, 2))[..., : mixer.dt_rank]
        expected = F.softplus(mixer.dt_proj(dt))
    torch.testing.assert_close(deltas[0], expected)
    result = md.ssm_retention(model, ids, key_positions=[2, 9])
    assert result["unit"] == "token" and result["accumulated"]["n_steps"] == [9, 2]


def test_simple_ssm_retention_is_its_decay():
    model = tiny(ssm_type="simple")
    ids = random_ids(2, 32)
    result = untouched(model, ids, lambda: md.ssm_retention(model, ids, key_positions=[5, 13]))
    assert result["kind"] == "simple"
    for i, layer in enumerate(model.ssm.layers):
        decay = torch.sigmoid(layer.mixer.decay_logit.detach().double()).numpy()
        assert result["layers"][i]["retention"]["p50"] == pytest.approx(float(np.median(decay)))
        assert 0 < result["layers"][i]["retention"]["p5"] <= result["layers"][i]["retention"]["p95"] <= 1
        powered = np.concatenate([decay ** 4, decay ** 2])  # key 5: 4 writes to the question, key 13: 2
        assert result["accumulated"]["layers"][i]["retention"]["p50"] == pytest.approx(float(np.median(powered)))


# ------------------------------------------------------------------------- attention mass
class _RecordingF:
    """torch.nn.functional with an explicit dense softmax attention that records its probabilities."""

    def __init__(self) -> None:
        self.probs: list[torch.Tensor] = []

    def __getattr__(self, name):
        return getattr(F, name)

    def scaled_dot_product_attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        probs = torch.softmax(scores.masked_fill(~attn_mask, float("-inf")), -1)
        self.probs.append(probs)
        return probs @ v


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_attention_mass_equals_an_explicit_dense_softmax(impl, monkeypatch):
    ids = random_ids(2, 24)
    N, M, T, W = 4, 8, 24, 6
    dense = tiny(attention_impl="dense")
    recorder = _RecordingF()
    with monkeypatch.context() as patch:
        patch.setattr(windowed_attention, "F", recorder)
        with torch.no_grad():
            recorded_logits, _ = dense(ids)
    with torch.no_grad():
        torch.testing.assert_close(recorded_logits, dense(ids)[0])
    token_calls = [p for p in recorder.probs if p.shape[-2] == T and p.shape[-1] == N + W + (M - 1) + T]
    assert len(token_calls) == 2
    expected = [float(p[..., : N + W].sum(-1).mean()) for p in token_calls]
    model = tiny(attention_impl=impl)
    result = untouched(model, ids, lambda: md.memory_attention_mass(model, ids))
    assert result["n_layers"] == 2 and result["check_max_error"] < 1e-4
    for layer, want in zip(result["per_layer"], expected):
        assert layer["mass"] == pytest.approx(want, abs=1e-5)
        assert 0 <= layer["mass"] <= layer["max"] <= 1 and 0 <= layer["mass_with_memory"] <= 1
        assert len(layer["per_head"]) == model.config.n_heads
    # tokens 4.. see a slot: mass_with_memory is the mean over those tokens
    with_memory = [float(p[..., 4:, : N + W].sum(-1).mean()) for p in token_calls]
    assert [layer["mass_with_memory"] for layer in result["per_layer"]] == pytest.approx(with_memory, abs=1e-5)
    assert result["n_tokens_with_memory"] == T - 4


# --------------------------------------------------------------- diagnose, plots, command
def test_diagnose_plots_and_refuses_models_without_memory(tmp_path):
    model = tiny()
    task = TaskConfig(name="passkey", seq_len=32, key_length=1, n_values=8, n_filler=VOCAB - 10)
    ids = torch.zeros(1, 8, dtype=torch.long)
    result = untouched(model, ids, lambda: md.diagnose(model, task, n_samples=4, seed=0))
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["prompts"]["n_samples"] == 4
    assert result["prompts"]["key_positions"][0] == 1 and result["prompts"]["key_distance"][-1] == 1
    assert all(result[name] is not None for name in ("gradient", "key_pooling", "retention", "attention_mass"))
    paths = md.plot_diagnostics(result, tmp_path)
    assert sorted(p.name for p in paths) == ["attention_mass.png", "gradient_by_distance.png",
                                             "key_pooling_weight.png", "retention_histogram.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert "pooling weight on the key" in md.summarize(result)
    for arch in ("swa", "gpt"):
        with pytest.raises(ValueError, match="no memory"):
            md.diagnose(tiny(arch=arch), task, n_samples=2)
    with pytest.raises(ValueError, match="needs a model with memory writes"):
        md.write_gradient_by_distance(tiny(arch="swa"), ids, ids)
    mamba = md.diagnose(tiny(arch="mamba"), task, n_samples=2)
    assert mamba["retention"]["unit"] == "token" and set(mamba["skipped"]) == {"gradient", "key_pooling",
                                                                               "attention_mass"}
    with pytest.raises(ValueError, match="vocabulary"):
        md.diagnose(model, {"name": "passkey", "seq_len": 32, "n_filler": 40}, n_samples=2)


def test_diagnose_command(tmp_path, capsys):
    from smt.model_directory import save_model_dir

    tiny().save_pretrained(tmp_path / "smt")
    out = tmp_path / "diag"
    assert main(["diagnose", "--checkpoint", str(tmp_path / "smt"), "--seq-len", "32", "--samples", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SSM retention per write" in printed and "attention mass on memory slots" in printed
    result = json.loads((out / "diagnostics.json").read_text())
    assert result["model"]["vocab_size"] == VOCAB and len(result["gradient"]["distance"]) == 4
    assert (out / "gradient_by_distance.png").is_file() and (out / "attention_mass.png").is_file()
    tiny(arch="swa").save_pretrained(tmp_path / "swa")
    assert main(["diagnose", "--checkpoint", str(tmp_path / "swa"), "--seq-len", "32", "--samples", "2",
                 "--out", str(tmp_path / "swa_out")]) == 2
    assert "has no memory" in capsys.readouterr().err
    save_model_dir(tiny(arch="mamba"), tmp_path / "mamba")
    assert main(["diagnose", "--checkpoint", str(tmp_path / "mamba"), "--seq-len", "32", "--samples", "2",
                 "--out", str(tmp_path / "mamba_out")]) == 0
    printed = capsys.readouterr().out
    assert "SSM retention per token" in printed and "skipped gradient" in printed


def test_write_gate_usage_splits_key_writes_from_the_rest(monkeypatch):
    model = tiny(pool_over_memory=False, write_gate=True, write_gate_sparsity=0.5)
    ids = random_ids(2, 32)
    keys = torch.tensor([9, 9])  # M = 8, S = 4: writes 2 and 3 (after tokens 11 and 15) hold token 9
    open_writes = torch.zeros(2, 8)
    open_writes[:, [2, 3]] = 1.0
    # tokens-only pooling asks for every write's gate at once, (B * W) in row order
    monkeypatch.setattr(model.pooling, "write_gate", lambda pooled: open_writes.reshape(-1))
    usage = untouched(model, ids, lambda: md.write_gate_usage(model, ids, keys))
    assert usage["hard"] and usage["key_writes"] == {"n": 4, "mean": 1.0, "closed": 0.0, "open": 1.0}
    assert usage["other_writes"] == {"n": 12, "mean": 0.0, "closed": 1.0, "open": 0.0}
    monkeypatch.undo()
    task = TaskConfig(name="passkey", seq_len=32, key_length=1, n_values=8, n_filler=VOCAB - 10)
    result = md.diagnose(model, task, n_samples=2)
    assert 0.0 <= result["write_gates"]["other_writes"]["mean"] <= 1.0
    assert "write gates (hard)" in md.summarize(result)
    assert md.diagnose(tiny(), task, n_samples=2)["write_gates"] is None
    with pytest.raises(ValueError, match="gated memory"):
        md.write_gate_usage(tiny(), ids, keys)


def test_diagnose_a_token_rate_memory_measures_what_applies(tmp_path):
    model = tiny(default=True, memory="token_rate")
    task = TaskConfig(name="passkey", seq_len=32, key_length=1, n_values=8, n_filler=VOCAB - 10)
    result = untouched(model, torch.zeros(1, 8, dtype=torch.long),
                       lambda: md.diagnose(model, task, n_samples=4, seed=0))
    assert set(result["skipped"]) == {"gradient", "key_pooling", "write_gates"}
    assert "every token" in result["skipped"]["gradient"]
    assert result["retention"]["unit"] == "token" and result["attention_mass"] is not None
    json.dumps(result, allow_nan=False)
    assert {p.name for p in md.plot_diagnostics(result, tmp_path)} == {"attention_mass.png",
                                                                       "retention_histogram.png"}
    md.summarize(result)
