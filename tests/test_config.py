from __future__ import annotations

import pytest

from smt import ConfigError, StrideHybridConfig, TrainingConfig, pad_vocab_size

INVALID = [
    ({"stride": 0}, "stride"),
    ({"stride": -3}, "stride"),
    ({"n_ssm_outputs": -1}, "n_ssm_outputs"),
    ({"m_input_tokens": 0}, "m_input_tokens"),
    ({"d_model": 0}, "d_model"),
    ({"d_model": 100, "n_heads": 3}, "n_heads"),
    ({"d_model": 64, "n_heads": 64}, "RoPE needs an even head size"),
    ({"pooling_heads": 5}, "pooling_heads"),
    ({"write_vectors": 2}, "write_vectors was removed"),
    ({"write_gate_gradient": "straight_through"}, "write_gate_gradient was removed"),
    ({"memory_read": "slots+tied"}, "slots\\+tied' was removed"),
    ({"write_gate": True, "write_gate_sparsity": 0}, "the soft gate, removed"),
    ({"write_gate": False, "write_gate_sparsity": 0.05}, "write_gate is false"),
    ({"write_gate": True, "write_gate_sparsity": -0.1}, "write_gate_sparsity"),
    ({"vocab_size": 1}, "vocab_size"),
    ({"device": "tpu"}, "device"),
    ({"dtype": "int8"}, "dtype"),
    ({"arch": "rnn"}, "arch"),
    ({"ssm_type": "s4"}, "ssm_type"),
    ({"position": "alibi"}, "position"),
    ({"attention_impl": "flash"}, "attention_impl"),
    ({"dropout": 1.0}, "dropout"),
    ({"transformer_n_layers": 0}, "transformer_n_layers"),
    ({"stride": 2.5}, "stride"),
    ({"stride": True}, "stride"),
    ({"d_ff": 0}, "d_ff"),
    ({"ssm_n_layers": -1}, "ssm_n_layers"),
    ({"ssm_n_layers": 0}, "memory needs at least one SSM layer"),
    ({"rope_base": 1.0}, "rope_base"),
    ({"layer_norm_eps": -1}, "layer_norm_eps"),
    ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
    ({"layer_norm_eps": "small"}, "layer_norm_eps"),
    ({"ssm_init": "orthogonal"}, "ssm_init"),
    ({"ssm_dt_min": 0.2, "ssm_dt_max": 0.1}, "ssm_dt_min"),
    ({"ssm_dt_min": 0.0}, "ssm_dt_min"),
]


@pytest.mark.parametrize("overrides,name", INVALID)
def test_invalid_model_configs_name_the_field(overrides, name):
    with pytest.raises(ConfigError, match=name) as error:
        StrideHybridConfig.tiny(**overrides)
    assert isinstance(error.value, ValueError)
    assert ";" in str(error.value), "the message says how to fix it"


def test_valid_corner_cases():
    StrideHybridConfig.tiny(n_ssm_outputs=0, ssm_n_layers=0)  # a window without memory needs no SSM
    StrideHybridConfig.tiny(m_input_tokens=1, stride=1)
    StrideHybridConfig.tiny(device="cuda:1")
    StrideHybridConfig.tiny(position="learned", n_heads=3, d_model=63, pooling_heads=1)


def test_round_trips(tmp_path):
    config = StrideHybridConfig.small(stride=7)
    assert StrideHybridConfig.from_dict(config.to_dict()) == config
    config.to_json(tmp_path / "c.json")
    config.to_yaml(tmp_path / "c.yaml")
    assert StrideHybridConfig.from_file(tmp_path / "c.json") == config
    assert StrideHybridConfig.from_file(tmp_path / "c.yaml") == config
    with pytest.raises(ConfigError, match="unknown StrideHybridConfig field.*'strid'"):
        StrideHybridConfig.from_dict({"strid": 3})
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        StrideHybridConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        StrideHybridConfig.from_file(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="stride"):
        config.replace(stride=0)


def test_derived_sizes_and_vocab_padding():
    config = StrideHybridConfig.wikitext103()
    assert config.window_size == 65 and config.d_head == 64 and config.ffn_dim == 3072
    assert config.dt_rank == 48 and config.d_inner == 1536
    assert pad_vocab_size(50277) == 50280 and pad_vocab_size(50280) == 50280 and pad_vocab_size(1) == 8


def test_training_config():
    config = TrainingConfig(batch_size=4, gradient_accumulation_steps=2)
    assert config.max_steps is not None
    with pytest.raises(ConfigError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ConfigError, match="dtype"):
        TrainingConfig(dtype="float8")
    with pytest.raises(ConfigError, match="max_steps or epochs"):
        TrainingConfig(max_steps=None, epochs=None)


def test_dt_init_range_defaults_differ_for_the_memory_and_the_mamba_lm():
    assert StrideHybridConfig.tiny().dt_init_range == (1e-4, 1e-2)
    assert StrideHybridConfig.tiny(arch="mamba").dt_init_range == (1e-3, 1e-1)
    assert StrideHybridConfig.tiny(ssm_dt_min=1e-3, ssm_dt_max=0.1).dt_init_range == (1e-3, 0.1)
    with pytest.raises(ConfigError, match="ssm_dt_min"):
        StrideHybridConfig.tiny(ssm_dt_min=0.05)  # above the memory's default dt_max


def test_the_default_memory_is_tokens_only_with_hard_gates_and_the_seed_design_stays_a_setting():
    default = StrideHybridConfig.tiny()
    assert (default.pool_over_memory, default.write_gate, default.write_gate_sparsity) == (False, True, 1e-4)
    seed = StrideHybridConfig.tiny(pool_over_memory=True, write_gate=False)
    assert seed.write_gate_sparsity == 0.0  # no penalty without gates: the seed's design validates as it was
    # a config saved before the switch (every field written out) loads as what it was
    old = StrideHybridConfig.from_dict({**seed.to_dict(), "write_gate_sparsity": 0.0})
    assert (old.pool_over_memory, old.write_gate, old.write_gate_sparsity) == (True, False, 0.0)
    assert StrideHybridConfig.from_dict(default.to_dict()) == default
    # a penalty left at its default follows the gate; one set by hand stays (and is checked)
    assert default.replace(write_gate=False).write_gate_sparsity == 0.0
    assert seed.replace(write_gate=True).write_gate_sparsity == 1e-4
    with pytest.raises(ConfigError, match="write_gate is false"):
        default.replace(write_gate_sparsity=0.05).replace(write_gate=False)


def test_window_reach_is_layers_times_window_minus_one():
    assert StrideHybridConfig.tiny().window_reach == 2 * (8 - 1)
    assert StrideHybridConfig.tiny(transformer_n_layers=3, m_input_tokens=5).window_reach == 12


def test_the_seeds_field_names_are_canonical_and_the_old_ones_still_load(tmp_path):
    """transformer_n_layers / ssm_n_layers (the seed quick start's names) are the fields; the old
    n_layers / ssm_layers are accepted everywhere a config is given, and read as properties."""
    from smt.training.run_config import load_run_config

    seed = StrideHybridConfig(n_ssm_outputs=15, m_input_tokens=50, stride=16, transformer_n_layers=12,
                              ssm_n_layers=24, d_model=768, vocab_size=50280)
    assert seed.to_dict()["transformer_n_layers"] == 12 and "n_layers" not in seed.to_dict()
    old = StrideHybridConfig.tiny(n_layers=3, ssm_layers=1)
    assert (old.transformer_n_layers, old.ssm_n_layers) == (3, 1) and (old.n_layers, old.ssm_layers) == (3, 1)
    assert StrideHybridConfig.from_dict({"n_layers": 5}).transformer_n_layers == 5
    assert old.replace(n_layers=4).transformer_n_layers == 4
    saved = tmp_path / "old.yaml"
    saved.write_text("model:\n  preset: tiny\n  n_layers: 3\n  ssm_layers: 1\n", encoding="utf-8")
    full = load_run_config(saved, ["--model.n_layers", "4", "--ssm_layers", "2"])
    assert (full.model.transformer_n_layers, full.model.ssm_n_layers) == (4, 2)
    with pytest.raises(ConfigError, match="both 'n_layers' and 'transformer_n_layers'"):
        StrideHybridConfig(n_layers=2, transformer_n_layers=3)


def test_heads_default_to_gpt2_widths():
    """Without n_heads, heads are 64 wide as in GPT-2 (the seed's Small preset gives only d_model=512)."""
    assert StrideHybridConfig().n_heads == 12
    assert StrideHybridConfig(d_model=512).n_heads == 8
    assert StrideHybridConfig(d_model=200).n_heads == 2  # the widest split not above 64 that divides
    assert StrideHybridConfig(d_model=512, n_heads=4).n_heads == 4


def test_the_memory_strategy_is_one_field_and_the_old_flag_maps_to_it():
    from smt.models.memory import GatedTokensMemory, SlotFeedbackMemory
    from smt.models.stride_hybrid import StrideHybridModel

    assert StrideHybridConfig.tiny().memory == "gated_tokens"
    saved = {k: v for k, v in StrideHybridConfig.tiny().to_dict().items() if k != "memory"}  # an older config
    old = StrideHybridConfig.from_dict({**saved, "pool_over_memory": True})
    assert old.memory == "slot_feedback" and old.pool_over_memory and "pool_over_memory" not in old.to_dict()
    assert StrideHybridConfig.tiny(pool_over_memory=False).memory == "gated_tokens"
    assert StrideHybridConfig.tiny().replace(pool_over_memory=True, write_gate=False).memory == "slot_feedback"
    assert isinstance(StrideHybridModel(old).memory, SlotFeedbackMemory)
    assert isinstance(StrideHybridModel(StrideHybridConfig.tiny()).memory, GatedTokensMemory)
    with pytest.raises(ConfigError, match="pool_over_memory=True means memory='slot_feedback'"):
        StrideHybridConfig.tiny(pool_over_memory=True, memory="gated_tokens")
    with pytest.raises(ConfigError, match="memory='slots'"):
        StrideHybridConfig.tiny(memory="slots")


def test_a_saved_config_holding_the_removed_fields_at_their_neutral_values_still_loads():
    saved = {**StrideHybridConfig.tiny().to_dict(), "write_vectors": 1, "write_gate_gradient": "clamp"}
    assert StrideHybridConfig.from_dict(saved) == StrideHybridConfig.tiny()


def test_a_baseline_writes_only_the_fields_its_model_reads(tmp_path):
    """gpt / swa / mamba leave out the memory's fields (and the transformers the SSM's) when written; a
    config written before, that holds them, loads as the same config."""
    from dataclasses import asdict

    from smt.config import MEMORY_FIELDS, SSM_FIELDS, UNUSED_FIELDS
    from smt.models.baselines import matched_baseline

    smt = StrideHybridConfig.tiny(stride=3, pooling_heads=4, ssm_d_state=4)
    assert set(smt.to_dict()) == set(asdict(smt))  # SMT writes every field
    for arch, absent in [("gpt", MEMORY_FIELDS + SSM_FIELDS), ("swa", MEMORY_FIELDS + SSM_FIELDS),
                         ("mamba", MEMORY_FIELDS)]:
        baseline = matched_baseline(smt, arch)
        written = baseline.to_dict()
        assert set(absent) <= set(UNUSED_FIELDS[arch]) and not set(absent) & set(written), arch
        assert {"m_input_tokens", "transformer_n_layers", "d_model", "vocab_size"} <= set(written)
        if arch == "mamba":
            assert {"ssm_n_layers", "ssm_d_state", "use_cuda_kernels"} <= set(written)
        assert StrideHybridConfig.from_dict(written) == baseline
        baseline.to_yaml(tmp_path / f"{arch}.yaml")
        assert StrideHybridConfig.from_file(tmp_path / f"{arch}.yaml") == baseline
        old = StrideHybridConfig.from_dict(asdict(baseline))  # as every config was written before
        assert old == baseline and old.to_dict() == written
    # equal when they write the same: a baseline's unused fields do not count, SMT's all do
    assert StrideHybridConfig.tiny(arch="gpt", stride=3) == StrideHybridConfig.tiny(arch="gpt")
    assert StrideHybridConfig.tiny(arch="gpt", context_length=9) != StrideHybridConfig.tiny(arch="gpt")
    assert StrideHybridConfig.tiny(stride=3) != StrideHybridConfig.tiny()
    assert StrideHybridConfig.tiny(arch="mamba", ssm_d_state=4) != StrideHybridConfig.tiny(arch="mamba")


def test_the_summary_shows_the_rows_of_the_arch():
    rows = {arch: [line.split("|")[0].strip() for line in StrideHybridConfig.tiny(arch=arch).summary(None).splitlines()]
            for arch in ("smt", "swa", "gpt", "mamba")}
    assert rows["smt"][:3] == ["architecture", "window", "memory write"] and "SSM memory" in rows["smt"]
    for arch in ("swa", "gpt", "mamba"):
        assert not {"memory write", "attention pooling", "memory read", "SSM memory"} & set(rows[arch]), arch
    assert "window" in rows["swa"] and "attention" in rows["gpt"] and "SSM" in rows["mamba"]
    assert "transformer" not in rows["mamba"]
