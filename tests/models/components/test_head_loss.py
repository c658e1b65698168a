"""The fused head loss (fast path) against the unfused lm_head + cross-entropy: values and gradients."""

from __future__ import annotations

import pytest
import torch

from smt import StrideHybridConfig
from smt.models.baselines import build_model
from smt.models.components.head_loss import IGNORE_INDEX, linear_cross_entropy, linear_cross_entropy_reference


def _inputs(seed: int = 0):
    torch.manual_seed(seed)
    hidden = torch.randn(2, 37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (2, 37))
    targets[0, :5] = IGNORE_INDEX  # positions without a target count nowhere
    targets[1, -1] = IGNORE_INDEX
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_tokens", [1, 7, 74, None])
def test_fused_head_loss_matches_the_reference_values_and_gradients(chunk_tokens):
    hidden, weight, targets = _inputs()
    results = []
    for loss_fn in (lambda: linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk_tokens),
                    lambda: linear_cross_entropy_reference(hidden, weight, targets)):
        loss = loss_fn()
        results.append((loss, torch.autograd.grad(loss * 0.37, (hidden, weight))))  # a scaled loss, as a mean
    (loss, grads), (loss_ref, grads_ref) = results
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fused_head_loss_under_bf16_autocast_matches_the_reference():
    hidden, weight, targets = _inputs(1)
    results = []
    for loss_fn in (linear_cross_entropy, linear_cross_entropy_reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(hidden, weight, targets)
        results.append((loss, torch.autograd.grad(loss, (hidden, weight))))
    (loss, grads), (loss_ref, grads_ref) = results
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-3, atol=1e-2)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_fused_head_loss_without_gradients_gives_the_reference_loss():
    """The branch that forms no gradients (evaluation; inputs that need none) computes the same loss."""
    hidden, weight, targets = _inputs(2)
    want = linear_cross_entropy_reference(hidden, weight, targets).detach()
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, chunk_tokens=7), want)
    torch.testing.assert_close(linear_cross_entropy(hidden.detach(), weight.detach(), targets, chunk_tokens=7), want)


@pytest.mark.parametrize("arch", ["smt", "swa", "gpt", "mamba"])
def test_every_model_gives_the_loss_of_its_logits_with_targets(arch):
    """forward(ids, targets=...) returns no logits and the summed NLL of the logits forward(ids) gives,
    with the same parameter gradients."""
    torch.manual_seed(0)
    config = StrideHybridConfig(arch=arch, vocab_size=64, d_model=32, transformer_n_layers=1, n_heads=2,
                                ssm_n_layers=1, n_ssm_outputs=2, m_input_tokens=4, stride=4, context_length=16)
    model = build_model(config).train()
    ids = torch.randint(0, 64, (2, 21))
    targets = ids.roll(-1, 1)
    targets[:, -1] = IGNORE_INDEX
    logits, _ = model(ids)
    reference = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    reference.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    none, aux = model(ids, targets=targets)
    assert none is None
    torch.testing.assert_close(aux["nll_sum"], reference, rtol=1e-5, atol=1e-4)
    aux["nll_sum"].backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize("arch", ["smt", "swa", "gpt", "mamba"])
def test_aux_loss_is_the_whole_training_objective(arch):
    """aux["loss"] = the mean NLL over the real targets plus every auxiliary term: the default SMT's write
    gates add their sparsity penalty in training (so a user's loop that minimises aux["loss"] trains what
    `smt train` trains), not in eval; the baselines have none."""
    torch.manual_seed(0)
    config = StrideHybridConfig(arch=arch, vocab_size=64, d_model=32, transformer_n_layers=1, n_heads=2,
                                ssm_n_layers=1, n_ssm_outputs=2, m_input_tokens=4, stride=4, context_length=16,
                                write_gate_sparsity=0.5)
    model = build_model(config).train()
    ids = torch.randint(0, 64, (2, 21))
    targets = ids.roll(-1, 1)
    targets[:, -3:] = IGNORE_INDEX
    _, aux = model(ids, targets=targets)
    mean_nll = aux["nll_sum"] / (targets != IGNORE_INDEX).sum()
    if arch == "smt":
        assert float(aux["auxiliary_loss"]) == pytest.approx(0.5 * float(aux["write_gates"].mean()))
        assert float(aux["auxiliary_loss"]) > 0.01
        torch.testing.assert_close(aux["loss"], mean_nll + aux["auxiliary_loss"])
    else:
        assert "auxiliary_loss" not in aux
        torch.testing.assert_close(aux["loss"], mean_nll)
    aux["loss"].backward()
    if arch == "smt":
        assert model.pooling.gate.weight.grad.abs().sum() > 0
    _, eval_aux = model.eval()(ids, targets=targets)
    torch.testing.assert_close(eval_aux["loss"], eval_aux["nll_sum"] / (targets != IGNORE_INDEX).sum())


@pytest.mark.parametrize("targets,message", [
    (torch.zeros(2, 5, dtype=torch.long), "shape"),
    (torch.full((2, 6), 64), "outside the vocabulary"),
    (torch.zeros(2, 6), "integer tensor"),
])
def test_bad_targets_get_a_clear_error(targets, message):
    model = build_model(StrideHybridConfig(arch="gpt", vocab_size=64, d_model=16, transformer_n_layers=1,
                                           n_heads=2, context_length=8))
    with pytest.raises((ValueError, TypeError), match=message):
        model(torch.zeros(2, 6, dtype=torch.long), targets=targets)
