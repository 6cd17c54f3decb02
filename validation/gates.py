"""Gates: thresholds from params.yaml applied to an artifact's metrics."""

from __future__ import annotations

from typing import Any

# gate name -> (metric path in the validation record, comparison)
GATES = {
    "max_ppl_ratio": ("accuracy.worst_ppl_ratio", "<="),
    "min_top1_agreement": ("accuracy.top1_agreement", ">="),
    "max_kl_mean": ("accuracy.kl_mean", "<="),
    "max_kl_p99": ("accuracy.kl_p99", "<="),
    "min_tokenizer_agreement": ("tokenizer_parity.encode_agreement", ">="),
    "min_prefix_agreement": ("smoke.prefix_agreement", ">="),
    "smoke_must_pass": ("smoke.passed", "=="),
    # LongRoPE models only: the window past the original context (validate records long_context)
    "min_long_top1_agreement": ("long_context.top1_agreement", ">="),
    "max_long_kl_mean": ("long_context.kl_mean", "<="),
}
# always-on checks, whatever the params
FIXED = [
    ("tokenizer_roundtrip_exact", "tokenizer_parity.roundtrip_exact", ">=", 1.0),
    ("chat_template_equal", "tokenizer_parity.chat_template_equal", "==", True),
]


def _get(record: dict[str, Any], path: str) -> Any:
    cur: Any = record
    for k in path.split("."):
        cur = cur.get(k) if isinstance(cur, dict) else None
    return cur


def _ok(value: Any, op: str, threshold: Any) -> bool:
    if value is None:
        return False
    if op == "<=":
        return value <= threshold
    if op == ">=":
        return value >= threshold
    return value == threshold


def evaluate(record: dict[str, Any], thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for gate, threshold in sorted(thresholds.items()):
        if (gate == "smoke_must_pass" and not threshold) or threshold is None:
            continue
        if GATES[gate][0].startswith("long_context.") and not record.get("long_context"):
            continue  # no long window: not a LongRoPE model
        metric, op = GATES[gate]
        value = _get(record, metric)
        out.append({"gate": gate, "metric": metric, "op": op, "threshold": threshold, "value": value,
                    "passed": _ok(value, op, True if gate == "smoke_must_pass" else threshold)})
    for gate, metric, op, threshold in FIXED:
        value = _get(record, metric)
        out.append({"gate": gate, "metric": metric, "op": op, "threshold": threshold, "value": value,
                    "passed": _ok(value, op, threshold)})
    return out


def describe_failures(gates: list[dict[str, Any]]) -> list[str]:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else repr(v)

    return [f"{g['metric']} = {fmt(g['value'])} (gate {g['gate']}: must be {g['op']} {fmt(g['threshold'])})"
            for g in gates if not g["passed"]]
