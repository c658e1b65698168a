from __future__ import annotations

import math

import pytest
import torch

from smt import AttentionPooling, AttentionPoolingAnalyzer
from smt.evaluation.pooling_analyzer import describe_pooling


def test_forward_equals_pool_of_projections_and_masks_hide_positions():
    pooling = AttentionPooling(32, n_heads=4)
    window = torch.randn(3, 10, 32)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[:, :4] = False
    pooled, weights = pooling(window, mask)
    assert pooled.shape == (3, 32) and weights.shape == (3, 4, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert torch.all(weights[..., :4] == 0)
    # masked positions have no influence, whatever they hold
    garbage = window.clone()
    garbage[:, :4] = 1e6
    torch.testing.assert_close(pooling(garbage, mask)[0], pooled)
    # the same as pooling the visible part alone
    torch.testing.assert_close(pooling(window[:, 4:])[0], pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooling.pool(*pooling.project(window), mask)[0], pooled)


def test_single_head_weights_are_the_softmax_of_query_key_scores():
    pooling = AttentionPooling(8, n_heads=1)
    window = torch.randn(1, 5, 8)
    keys = pooling.key(pooling.norm(window))
    expected = torch.softmax((keys @ pooling.query[0]) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(pooling(window)[1][:, 0], expected)


def test_pooling_rejects_heads_not_dividing_width():
    with pytest.raises(ValueError, match="divisible"):
        AttentionPooling(30, n_heads=4)


def test_analyzer_statistics_by_hand():
    analyzer = AttentionPoolingAnalyzer(n_ssm_outputs=2, m_input_tokens=2)
    weights = torch.tensor([[[0.5, 0.0, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0]]])  # (B=1, W=2, 4)
    stats = analyzer.analyze_attention(weights)
    assert stats["ssm_total"] == pytest.approx(0.25)
    assert stats["input_total"] == pytest.approx(0.75)
    entropy_first = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert stats["entropy"] == pytest.approx(entropy_first / 2)
    assert stats["per_position"] == pytest.approx([0.25, 0.0, 0.125, 0.625])
    assert stats["ssm_share_by_write"] == pytest.approx([0.5, 0.0])
    # the maximum counts the positions each write could weigh: the first all four, the second (no slot
    # yet, one token so far: the masked positions lead each half) only its last token
    assert stats["max_entropy"] == pytest.approx((math.log(4) + 0.0) / 2)
    assert (stats["visible_positions"], stats["visible_slots"], stats["visible_tokens"]) == (4, 2, 2)
    with pytest.raises(ValueError, match="window positions"):
        analyzer.analyze_attention(torch.ones(2, 5))


def test_the_entropy_maximum_counts_only_the_positions_the_pooling_can_weigh():
    """A pooling over tokens only never weighs the slot half: uniform over M tokens is the maximum,
    log M, not log (N + M); the sentence says the pooling is uniform, and says otherwise when it picks."""
    analyzer = AttentionPoolingAnalyzer(n_ssm_outputs=8, m_input_tokens=64)
    uniform = torch.cat([torch.zeros(5, 8), torch.full((5, 64), 1 / 64)], -1)
    stats = analyzer.analyze_attention(uniform)
    assert stats["entropy"] == pytest.approx(math.log(64)) and stats["max_entropy"] == pytest.approx(math.log(64))
    assert (stats["visible_slots"], stats["visible_tokens"], stats["evenness"], stats["uniform"]) == (0, 64, 1.0, True)
    assert describe_pooling(stats).startswith("the pooling is uniform: it has not learned to pick positions")
    # near-uniform (double weight on one token): still uniform in words
    near = uniform.clone()
    near[:, -1] *= 2
    near /= near.sum(-1, keepdim=True)
    assert analyzer.analyze_attention(near)["uniform"]
    # a pooling that puts most of its weight on 4 of the 64 tokens picks positions
    picking = torch.cat([torch.zeros(5, 8), torch.softmax(torch.cat([torch.zeros(5, 60), torch.full((5, 4), 10.0)],
                                                                     -1), -1)], -1)
    picked = analyzer.analyze_attention(picking)
    assert not picked["uniform"] and picked["max_entropy"] == pytest.approx(math.log(64))
    assert describe_pooling(picked).startswith("the pooling picks positions: its weight is as concentrated as an "
                                               "even spread over 4.")
    # over memory + tokens, the early writes see fewer slots (empty ones lead the slot half)
    both = torch.cat([torch.full((1, 8), 1 / 72), torch.full((1, 64), 1 / 72)], -1)
    early = torch.cat([torch.zeros(1, 6), torch.full((1, 66), 1 / 66)], -1)
    stats = analyzer.analyze_attention(torch.cat([both, early]))
    assert stats["max_entropy"] == pytest.approx((math.log(72) + math.log(66)) / 2)
    assert stats["uniform"] and (stats["visible_slots"], stats["visible_positions"]) == (8, 72)


def test_visualize_writes_a_png(tmp_path):
    analyzer = AttentionPoolingAnalyzer(n_ssm_outputs=3, m_input_tokens=5)
    weights = torch.softmax(torch.randn(2, 6, 2, 8), -1)
    path = analyzer.visualize_attention(weights, save_path=tmp_path / "pool.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_analyzer_works_on_the_class_as_the_seed_calls_it(tmp_path):
    """The seed's quick start calls the analyzer on the class with the window as keywords."""
    weights = torch.softmax(torch.randn(6, 65), -1)
    on_class = AttentionPoolingAnalyzer.analyze_attention(weights, window_size=65, n_ssm=15)
    on_instance = AttentionPoolingAnalyzer(15, 50).analyze_attention(weights)
    assert on_class == on_instance
    assert on_class["ssm_total"] == pytest.approx(float(weights[:, :15].sum(-1).mean()), abs=1e-6)
    small = torch.softmax(torch.randn(3, 12), -1)
    assert AttentionPoolingAnalyzer(4, 8).analyze_attention(small, n_ssm=2)["ssm_total"] == pytest.approx(
        float(small[:, :2].sum(-1).mean()))
    path = AttentionPoolingAnalyzer.visualize_attention(weights, save_path=tmp_path / "attention_pattern.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="window_size=N\\+M, n_ssm=N"):
        AttentionPoolingAnalyzer.analyze_attention(small)
    with pytest.raises(ValueError, match="n_ssm"):
        AttentionPoolingAnalyzer.analyze_attention(small, window_size=12, n_ssm=12)


