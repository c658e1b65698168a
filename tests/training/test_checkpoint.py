import json

import pytest
import torch

from smt.config import StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel
from smt.training.checkpoint import (
    CheckpointError,
    CheckpointPayload,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)


def _save(root, model, step, val_loss=None, keep_last=2):
    payload = CheckpointPayload(step, {"data_position": {"mode": "random"}},
                                {"optimizer": {"x": torch.ones(3)}, "torch_rng": torch.get_rng_state()})
    return save_checkpoint(root, model, payload, keep_last=keep_last, val_loss=val_loss)


def test_round_trip_and_no_temporary_files_left(tmp_path):
    model = StrideHybridModel(StrideHybridConfig.tiny())
    path = _save(tmp_path, model, 5)
    assert path.name == "step_000005"
    assert [p.name for p in tmp_path.iterdir()] == ["step_000005"]  # nothing staged is left over
    other = StrideHybridModel(StrideHybridConfig.tiny())
    loaded = load_checkpoint(path, other)
    assert loaded.training_state["step"] == 5
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(loaded.optimizer_state["optimizer"]["x"], torch.ones(3))


def test_keeps_the_last_k_and_the_best(tmp_path):
    model = StrideHybridModel(StrideHybridConfig.tiny())
    _save(tmp_path, model, 1, val_loss=2.0)
    _save(tmp_path, model, 2, val_loss=1.0)
    for step, loss in ((3, 3.0), (4, 4.0), (5, 5.0)):
        _save(tmp_path, model, step, val_loss=loss)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000004", "step_000005"]
    assert json.loads((tmp_path / "best.json").read_text())["step_dir"] == "step_000002"
    assert resolve_checkpoint(tmp_path).name == "step_000002"
    assert resolve_checkpoint(tmp_path, prefer_best=False).name == "step_000005"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_training"])
def test_damaged_checkpoints_are_named(tmp_path, damage):
    model = StrideHybridModel(StrideHybridConfig.tiny())
    path = _save(tmp_path, model, 1)
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
        expected = r"model.safetensors is corrupted or truncated"
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
        expected = r"model.safetensors is corrupted or truncated"
    else:
        (path / "training.json").unlink()
        expected = r"training.json is missing"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, model)


def test_weights_of_another_config_are_refused(tmp_path):
    path = _save(tmp_path, StrideHybridModel(StrideHybridConfig.tiny()), 1)
    other = StrideHybridModel(StrideHybridConfig.tiny(d_model=32, n_heads=2))
    with pytest.raises(CheckpointError, match=r"step_000001/model.safetensors does not fit the model: shape"):
        load_checkpoint(path, other)


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_resume_tolerates_a_metrics_line_cut_off_by_a_kill(tmp_path):
    import json

    from smt.training.logging import MetricsLogger

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "spl')
    logger = MetricsLogger(tmp_path, resume_step=1)
    assert [r["step"] for r in logger.records] == [1]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1]


def test_prune_removes_staging_folders_of_killed_saves(tmp_path):
    from smt.training.checkpoint import prune_checkpoints

    stale = tmp_path / ".step_000016.tmp-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    prune_checkpoints(tmp_path, keep_last=2)
    assert not stale.exists()


def test_a_baseline_starts_from_a_saved_model_of_its_config(tmp_path):
    """run.init_from post-trains any arch: a Mamba-only model loads its own saved weights exactly,
    and a directory that is not there, or a component mapping, is refused with the reason."""
    from smt.model_directory import save_model_dir
    from smt.models.baselines import build_model as build_any
    from smt.training.model_factory import build_model

    config = StrideHybridConfig(arch="mamba", vocab_size=32, d_model=32, ssm_n_layers=2, transformer_n_layers=1,
                                n_heads=1)
    torch.manual_seed(0)
    saved = build_any(config)
    save_model_dir(saved, tmp_path / "mamba")
    torch.manual_seed(1)
    loaded = build_model(config, str(tmp_path / "mamba"))
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    for bad in (str(tmp_path / "missing"), {"mamba": "state-spaces/mamba-130m"}):
        with pytest.raises(ValueError, match="init_from"):
            build_model(config, bad)


def test_a_full_disk_is_named_and_the_last_good_checkpoint_stays(mount_tmpfs):
    """On a real full disk torch says `[enforce fail at inline_container.cc:672] . unexpected pos`
    (no ENOSPC, no "No space left"): the save still says the disk is full, where and how much is
    free, leaves no staging folder, and the earlier step loads. Before, torch's raw message escaped."""
    import shutil

    disk = mount_tmpfs("3m")
    model = StrideHybridModel(StrideHybridConfig.tiny())
    good = _save(disk, model, 1)
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(bytes(free - 200_000))  # room for a part of the next checkpoint only
    with pytest.raises(CheckpointError, match=r"disk full at .*: free [0-9,]+ bytes; free space or choose another "
                                              r"--output_dir.* step_000001, is intact"):
        _save(disk, model, 2)
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "step_000001"]
    load_checkpoint(good, StrideHybridModel(StrideHybridConfig.tiny()))


def test_checkpoints_are_readable_by_others_under_the_usual_umask(tmp_path):
    """Folders 0755 and files 0644 under umask 022 (mkdtemp / mkstemp alone give 0700 / 0600)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = _save(tmp_path, StrideHybridModel(StrideHybridConfig.tiny()), 1, val_loss=2.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
    assert stat.S_IMODE((tmp_path / "best.json").stat().st_mode) == 0o644
