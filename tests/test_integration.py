"""The seed quick start's integration check: `python tests/test_integration.py` prints one line per
component (attention pooling, window, transformer, SSM, full model), and pytest runs the same
checks. Each one tests a behaviour on a tiny model, not just that the code runs; the detailed
tests live beside each module under tests/models/."""

from __future__ import annotations

import sys

import torch

from smt import AttentionPooling, MambaStack, StrideHybridConfig, StrideHybridModel

CONFIG = StrideHybridConfig.tiny(vocab_size=64)  # N=4 slots, M=8 tokens, stride 4


def _model() -> StrideHybridModel:
    torch.manual_seed(0)
    return StrideHybridModel(CONFIG).eval()


def test_attention_pooling():
    """The window -> one vector, a softmax-weighted mix of the visible positions only."""
    torch.manual_seed(0)
    pooling = AttentionPooling(32, n_heads=2).eval()
    window = torch.randn(3, 12, 32)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[:, :4] = False  # empty memory slots at the front
    pooled, weights = pooling(window, mask)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    assert bool((weights[..., :4] == 0).all())
    changed = window.clone()
    changed[:, :4] = 100.0  # what is masked cannot reach the pooled vector
    torch.testing.assert_close(pooling(changed, mask)[0], pooled)


def test_window_manager():
    """The window slides token by token exactly as one call over the whole sequence."""
    model = _model()
    ids = torch.randint(0, CONFIG.vocab_size, (2, 23))
    with torch.no_grad():
        whole, _ = model(ids)
        state, pieces = None, []
        for t in range(ids.shape[1]):
            logits, aux = model(ids[:, t:t + 1], state=state)
            state = aux["state"]
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-4, atol=1e-4)
    assert int(state.position[0]) == ids.shape[1]


def test_transformer():
    """Causal: a later token never changes an earlier prediction."""
    model = _model()
    ids = torch.randint(0, CONFIG.vocab_size, (1, 30))
    other = ids.clone()
    other[0, 20:] = (other[0, 20:] + 1) % CONFIG.vocab_size
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(other)
    torch.testing.assert_close(a[:, :20], b[:, :20], rtol=0, atol=0)
    assert not torch.equal(a[:, 20:], b[:, 20:])


def test_ssm():
    """The Mamba memory: a whole sequence at once equals stepping it one input at a time."""
    torch.manual_seed(0)
    ssm = MambaStack(32, n_layers=2, d_state=8).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        whole, _ = ssm(x)
        state, steps = ssm.init_state(2), []
        for t in range(9):
            y, state = ssm.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), whole, rtol=1e-4, atol=1e-4)


def test_full_model():
    """Forward gives logits and one memory write per stride; generate extends the prompt."""
    model = _model()
    ids = torch.randint(0, CONFIG.vocab_size, (2, 30))
    with torch.no_grad():
        logits, aux = model(ids)
    assert logits.shape == (2, 30, CONFIG.vocab_size) and bool(torch.isfinite(logits).all())
    assert aux["n_writes"] == 30 // CONFIG.stride
    out = model.generate(ids[:1, :10], max_new_tokens=7, temperature=0.8, top_p=0.95, seed=0)
    assert out.shape == (1, 17) and torch.equal(out[:, :10], ids[:1, :10])


CHECKS = [("Attention Pooling", test_attention_pooling), ("Window Manager", test_window_manager),
          ("Transformer", test_transformer), ("SSM", test_ssm), ("Full Model", test_full_model)]


def main() -> int:
    failed = 0
    for name, check in CHECKS:
        try:
            check()
            print(f"✅ {name}")
        except Exception as error:  # report every component, then fail
            failed += 1
            print(f"❌ {name}: {type(error).__name__}: {error}")
    print("all components pass" if not failed else f"{failed} of {len(CHECKS)} components failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
