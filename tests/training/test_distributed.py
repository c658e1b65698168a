"""Two CPU processes (gloo DDP) train exactly like one process on the same global batch."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from smt.training.distributed import setup_distributed, teardown_distributed
from smt.training.trainer import Trainer
from tests.training.helpers import synthetic_view, tiny_config

SETTINGS = {"max_steps": 4, "log_interval": 1, "eval_interval": 2, "checkpoint_interval": 2,
            "gradient_accumulation_steps": 2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GradientRecorder(Trainer):
    """Keeps the (all-reduced) gradients of the first optimizer step."""

    def _clip(self, params, ctx):
        if not hasattr(self, "first_gradients"):
            self.first_gradients = [p.grad.detach().clone() for p in params]
        return super()._clip(params, ctx)


def _run(output_dir, batching, batch_size, context=None, parallel="ddp"):
    config = tiny_config(output_dir, batching, batch_size=batch_size, **SETTINGS)
    config.run.parallel = parallel
    trainer = GradientRecorder(config,
                     synthetic_view(), synthetic_view(), context=context)
    result = trainer.train()
    torch.save(trainer.first_gradients, output_dir / "first_gradients.pt")
    records = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()] \
        if (output_dir / "metrics.jsonl").exists() else []
    return result, records


def _worker(rank, world_size, port, root):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = setup_distributed("cpu", timeout_s=60)  # one process group for both runs
    try:
        for batching in ("random", "stream"):
            _run(root / f"ddp_{batching}", batching, batch_size=2, context=context)
        _run(root / "fsdp_random", "random", batch_size=2, context=context, parallel="fsdp")
    finally:
        teardown_distributed(context)


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / "step_000004" / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    for batching in ("random", "stream"):
        single, single_records = _run(tmp_path / f"one_{batching}", batching, batch_size=4)
        ddp_records = [json.loads(x) for x in (tmp_path / f"ddp_{batching}" / "metrics.jsonl").read_text().splitlines()]
        assert len(ddp_records) == len(single_records)
        for mine, theirs in zip(ddp_records, single_records):
            assert mine["step"] == theirs["step"] and mine["split"] == theirs["split"]
            for key in ("loss", "grad_norm"):
                if key in theirs:
                    tolerance = 1e-5 * max(1.0, abs(theirs[key]))
                    assert abs(mine[key] - theirs[key]) < tolerance, (batching, key, mine, theirs)
        ddp_weights = _final_weights(tmp_path / f"ddp_{batching}")
        one_weights = _final_weights(tmp_path / f"one_{batching}")
        for name, value in one_weights.items():
            # Adam turns reduction-order noise of tiny gradients into lr-sized steps: compare loosely; the
            # write gate's gradients are the smallest (the sparsity penalty's 1e-4 scale), so its noise
            # can flip a step's sign; the first gradients below are compared tightly for every parameter
            atol = 1e-3 if name.startswith("pooling.gate.") else 3e-4
            torch.testing.assert_close(ddp_weights[name], value, rtol=0, atol=atol,
                                       msg=lambda m, name=name: f"{name}: {m}")
        gradients = [torch.load(tmp_path / f"{kind}_{batching}" / "first_gradients.pt") for kind in ("ddp", "one")]
        for ddp_gradient, one_gradient in zip(*gradients):
            torch.testing.assert_close(ddp_gradient, one_gradient, rtol=1e-4, atol=1e-7)
        if batching == "stream":  # the carried state of all 4 rows was saved, in rank order
            from safetensors.torch import load_file

            step = tmp_path / f"ddp_{batching}" / "checkpoints" / "step_000004"
            saved = load_file(str(step / "stream_state.safetensors"))
            assert saved["position"].shape == (4,)
        assert single.losses

    fsdp = [json.loads(x) for x in (tmp_path / "fsdp_random" / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(x) for x in (tmp_path / "one_random" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in fsdp] == [r["step"] for r in single]
    for mine, theirs in zip(fsdp, single):  # FSDP (sharded parameters) trains the same model
        assert abs(mine["loss"] - theirs["loss"]) < 1e-4, (mine, theirs)
