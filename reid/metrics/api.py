"""What the evaluate stage writes of `evaluate_protocols`' results: metrics.json's flat entries."""

from __future__ import annotations

from . import keys


def flat_metrics(results: dict) -> dict:
    """The metrics.json entries of every protocol's result (``{protocol: evaluate-style dict}``, as
    `evaluate_protocols` returns): each registered metric of reid.metrics.keys under
    ``keys.key(protocol, name)`` (``rank1``, ``rerank/mAP``, ...) and each protocol's CMC curve
    under ``keys.curve_key(protocol)`` (a list of min(max_rank, gallery size) fractions).
    """
    out = {}
    for protocol, full in results.items():
        for name in keys.METRICS:
            out[keys.key(protocol, name)] = full[name]
        out[keys.curve_key(protocol)] = [float(x) for x in full["cmc"]]
    return out


__all__ = ["flat_metrics"]
