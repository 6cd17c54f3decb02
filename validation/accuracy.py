"""Accuracy metrics of an artifact against the reference model on the same tokens.

Protocol (params ``validation``): each evaluation text is tokenized with the source tokenizer (no
special tokens); the first ``windows_per_text`` non-overlapping windows of ``window`` tokens are
scored independently (teacher forcing). Position ``i`` of a window predicts token ``i + 1``.

- perplexity: ``exp(mean NLL of the true next token)`` over all positions of a text; reported with
  its ratio to the reference's perplexity on the same windows;
- top-1 agreement: share of positions where the artifact's argmax equals the reference's;
- KL(reference ‖ artifact) per position over the reference's top-k tokens plus one bucket holding
  the rest of the vocabulary. Merging tokens into one bucket can only lower a KL divergence, so this
  is a lower bound of the full-vocabulary KL, exact when ``topk`` equals the vocabulary size.
  Reported as mean and 99th percentile over positions.

LongRoPE models (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini: ``rope_scaling`` with long factors) switch
to their long rope factors past ``original_max_position_embeddings``, which 256-token windows never
reach. For them the reference also scores one ``validation.long_window``-token window (the evaluation
texts joined, from the start; one forward pass, the log-softmax in row blocks), and validation scores
the same window where a long gate is set (``min_long_top1_agreement``, ``max_long_kl_mean``: the FP16
artifacts by default), recorded as ``long_context``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class WindowReference:
    """What the reference stage keeps for one window (positions 0 .. W-2)."""

    ids: np.ndarray            # [W] int token ids
    target_logprob: np.ndarray  # [W-1] reference log p(true next token)
    top1: np.ndarray           # [W-1] reference argmax
    topk_idx: np.ndarray       # [W-1, k]
    topk_logprob: np.ndarray   # [W-1, k]


ROWS = 32  # positions scored at a time: the float64 log-softmax of a whole window is 0.1 GiB per copy at 49k vocab


def _row_blocks(n: int, rows: int | None):
    step = rows or ROWS
    return [slice(i, min(i + step, n)) for i in range(0, max(n, 1), step)]  # one empty block for n == 0


def reference_from_logits(ids: np.ndarray, logits: np.ndarray, k: int, rows: int | None = None) -> WindowReference:
    """Compact reference of one window from the reference model's logits [W, V].

    Computed ``rows`` positions at a time (every step is per position, so the result is the same
    for any block size), so the float64 temporaries stay small next to the model."""
    targets = np.asarray(ids[1:])
    n = len(targets)
    k = min(k, logits.shape[-1])
    parts = []
    for sl in _row_blocks(n, rows):
        lp = log_softmax(logits[:-1][sl])
        idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
        vals = np.take_along_axis(lp, idx, axis=-1)
        order = np.argsort(-vals, axis=-1, kind="stable")
        parts.append((lp[np.arange(len(lp)), targets[sl]].astype(np.float32), lp.argmax(-1).astype(np.int32),
                      np.take_along_axis(idx, order, axis=-1).astype(np.int32),
                      np.take_along_axis(vals, order, axis=-1).astype(np.float32)))
    cat = [np.concatenate(c) for c in zip(*parts)]
    return WindowReference(ids=np.asarray(ids, dtype=np.int32), target_logprob=cat[0], top1=cat[1],
                           topk_idx=cat[2], topk_logprob=cat[3])


def kl_topk(ref_idx: np.ndarray, ref_logprob: np.ndarray, q_logprob: np.ndarray) -> np.ndarray:
    """Per-position KL(p ‖ q) over p's top-k tokens plus one tail bucket. q_logprob: [N, V]."""
    p = np.exp(ref_logprob.astype(np.float64))                       # [N, k]
    lq = np.take_along_axis(q_logprob, ref_idx.astype(np.int64), -1)  # [N, k]
    q = np.exp(lq)
    head = (p * (ref_logprob - lq)).sum(-1)
    p_tail = np.clip(1.0 - p.sum(-1), 0.0, 1.0)
    q_tail = np.clip(1.0 - q.sum(-1), _EPS, 1.0)
    tail = np.where(p_tail > _EPS, p_tail * (np.log(np.maximum(p_tail, _EPS)) - np.log(q_tail)), 0.0)
    return np.maximum(head + tail, 0.0)


@dataclass
class WindowScore:
    nll: np.ndarray      # [W-1] artifact NLL of the true next token
    ref_nll: np.ndarray  # [W-1]
    top1_equal: np.ndarray  # [W-1] bool
    kl: np.ndarray       # [W-1]


def score_window(ref: WindowReference, logits: np.ndarray, rows: int | None = None) -> WindowScore:
    """Compare an artifact's logits [W, V] for ``ref.ids`` with the reference (``rows`` positions at a time,
    as in :func:`reference_from_logits`)."""
    n = logits.shape[0] - 1
    if n != len(ref.top1):
        raise ValueError(f"logits cover {n + 1} positions, the window has {len(ref.ids)}")
    targets = ref.ids[1:].astype(np.int64)
    nll, top1, kl = [], [], []
    for sl in _row_blocks(n, rows):
        lp = log_softmax(logits[:-1][sl])
        nll.append(-lp[np.arange(len(lp)), targets[sl]])
        top1.append(lp.argmax(-1) == ref.top1[sl])
        kl.append(kl_topk(ref.topk_idx[sl], ref.topk_logprob[sl], lp))
    return WindowScore(
        nll=np.concatenate(nll),
        ref_nll=-ref.target_logprob.astype(np.float64),
        top1_equal=np.concatenate(top1),
        kl=np.concatenate(kl),
    )


def summarize(scores: list[WindowScore]) -> dict[str, float]:
    nll = np.concatenate([s.nll for s in scores])
    ref = np.concatenate([s.ref_nll for s in scores])
    kl = np.concatenate([s.kl for s in scores])
    top1 = np.concatenate([s.top1_equal for s in scores])
    ppl, ref_ppl = float(np.exp(nll.mean())), float(np.exp(ref.mean()))
    return {
        "perplexity": ppl,
        "reference_perplexity": ref_ppl,
        "ppl_ratio": ppl / ref_ppl,
        "top1_agreement": float(top1.mean()),
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.percentile(kl, 99)),
        "positions": int(len(nll)),
    }


def prefix_agreement(reference: list[int], generated: list[int], n: int) -> float:
    """Share of the first ``n`` reference tokens matched position by position before the first miss."""
    ref = reference[:n]
    if not ref:
        return 1.0
    same = 0
    for a, b in zip(ref, generated):
        if a != b:
            break
        same += 1
    return same / len(ref)
