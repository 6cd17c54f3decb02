"""Each accuracy metric on hand-made logits with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aipc.validation.accuracy import (kl_topk, log_softmax, prefix_agreement, reference_from_logits, score_window,
                                 summarize)


def test_log_softmax_matches_definition():
    x = np.array([[1.0, 2.0, 3.0]])
    expected = x - math.log(math.exp(1) + math.exp(2) + math.exp(3))
    assert np.allclose(log_softmax(x), expected)
    assert np.allclose(np.exp(log_softmax(np.array([[1000.0, 1000.0]]))), 0.5)  # stable for large logits


def test_identical_logits_give_ratio_one_zero_kl_full_agreement():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=9)
    logits = rng.normal(size=(9, 50)) * 3
    ref = reference_from_logits(ids, logits, k=5)
    m = summarize([score_window(ref, logits)])
    assert m["ppl_ratio"] == pytest.approx(1.0)
    assert m["top1_agreement"] == 1.0
    assert m["kl_mean"] == pytest.approx(0.0, abs=1e-9) and m["kl_p99"] == pytest.approx(0.0, abs=1e-9)
    assert m["positions"] == 8


def test_perplexity_of_uniform_model_is_vocab_size():
    ids = np.array([0, 1, 2, 3, 4])
    V = 7
    uniform = np.zeros((5, V))
    peaked = np.full((5, V), -10.0)
    peaked[np.arange(5), [1, 2, 3, 4, 0]] = 10.0  # the reference predicts every next token
    ref = reference_from_logits(ids, peaked, k=V)
    m = summarize([score_window(ref, uniform)])
    assert m["perplexity"] == pytest.approx(V)
    assert m["reference_perplexity"] == pytest.approx(1.0, abs=1e-6)
    assert m["ppl_ratio"] == pytest.approx(V, rel=1e-6)


def test_kl_with_full_topk_equals_exact_kl():
    p = np.array([[0.5, 0.25, 0.25]])
    q = np.array([[0.25, 0.25, 0.5]])
    exact = float((p * np.log(p / q)).sum())  # 0.5 ln 2 - 0.25 ln 2 = 0.25 ln 2
    assert exact == pytest.approx(0.25 * math.log(2))
    idx = np.array([[0, 1, 2]])
    assert kl_topk(idx, np.log(p), np.log(q))[0] == pytest.approx(exact)


def test_kl_topk_tail_bucket_is_a_lower_bound():
    p = np.array([0.6, 0.2, 0.1, 0.1])
    q = np.array([0.3, 0.3, 0.3, 0.1])
    exact = float((p * np.log(p / q)).sum())
    # keep only the top-1 of p: buckets {0}, {1,2,3}: p=(0.6, 0.4), q=(0.3, 0.7)
    bucketed = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7)
    got = kl_topk(np.array([[0]]), np.log(p[None, :1]), np.log(q[None, :]))[0]
    assert got == pytest.approx(bucketed)
    assert got <= exact + 1e-12


def test_top1_agreement_counts_argmax_matches():
    ids = np.array([0, 0, 0, 0, 0])
    ref_logits = np.zeros((5, 3))
    ref_logits[:, 1] = 5.0                     # reference argmax is 1 everywhere
    art = ref_logits.copy()
    art[1, 2] = 10.0                           # positions 1 and 3 disagree
    art[3, 0] = 10.0
    m = summarize([score_window(reference_from_logits(ids, ref_logits, k=2), art)])
    assert m["top1_agreement"] == pytest.approx(0.5)


def test_windows_are_pooled_by_position():
    ids = np.array([0, 1, 0])
    V = 2
    ref_logits = np.zeros((3, V))
    a = np.zeros((3, V))
    b = np.array([[0.0, math.log(3)], [math.log(3), 0.0], [0.0, 0.0]])  # p(true)=0.75 at both positions
    ref = reference_from_logits(ids, ref_logits, k=2)
    m = summarize([score_window(ref, a), score_window(ref, b)])
    nll = [math.log(2)] * 2 + [-math.log(0.75)] * 2
    assert m["perplexity"] == pytest.approx(math.exp(sum(nll) / 4))


def test_shape_mismatch_is_an_error():
    ref = reference_from_logits(np.array([0, 1, 2]), np.zeros((3, 4)), k=2)
    with pytest.raises(ValueError, match="positions"):
        score_window(ref, np.zeros((5, 4)))


def test_prefix_agreement():
    assert prefix_agreement([1, 2, 3, 4], [1, 2, 9, 4], 4) == 0.5
    assert prefix_agreement([1, 2, 3, 4], [1, 2, 3, 4, 5], 2) == 1.0
    assert prefix_agreement([1, 2], [], 2) == 0.0
    assert prefix_agreement([], [1], 3) == 1.0


@pytest.mark.parametrize("rows", [1, 7, 32, 1000])
def test_scoring_in_row_blocks_is_bit_identical_to_one_block(rows):
    """The float64 log-softmax is computed a block of positions at a time to bound memory; every step
    is per position, so any block size gives the very same numbers."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 300, size=70)
    ref_logits, art_logits = rng.normal(size=(70, 300)) * 4, rng.normal(size=(70, 300)) * 4
    whole = reference_from_logits(ids, ref_logits, k=8, rows=10_000)
    part = reference_from_logits(ids, ref_logits, k=8, rows=rows)
    for name in ("ids", "target_logprob", "top1", "topk_idx", "topk_logprob"):
        assert np.array_equal(getattr(whole, name), getattr(part, name)), name
    a, b = score_window(whole, art_logits, rows=10_000), score_window(whole, art_logits, rows=rows)
    for name in ("nll", "ref_nll", "top1_equal", "kl"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert part.topk_idx.shape == (69, 8) and a.kl.shape == (69,)
