"""The evaluate stage: per_query.csv reproduces every scalar of metrics.json exactly; ci95 for every key."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from reid.evaluate import evaluate, interval_metrics
from reid.config import ConfigError
from reid.metrics import keys
from reid.metrics import uncertainty as U
from reid.typed_config import BootstrapConfig, RerankConfig

RERANK = RerankConfig.from_dict({"k1": 6, "k2": 3, "lambda": 0.3})


def features_file(path, seed=0):
    """A features.pt like `reid extract` writes: 12 identities, 3 cameras, gallery with junk and distractors."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(13, 16, generator=g)
    def split(pids, cams, noise):
        x = centres[torch.tensor(pids).clamp(min=0)] + noise * torch.randn(len(pids), 16, generator=g)
        return torch.nn.functional.normalize(x, dim=1), torch.tensor(pids), torch.tensor(cams)
    qp = [p for p in range(1, 13) for _ in range(2)]
    qc = [1 + (i % 2) for i in range(len(qp))]
    gp = [p for p in range(1, 13) for _ in range(3)] + [0] * 5 + [-1] * 3
    gc = [1 + (i % 3) for i in range(len(gp))]
    mp = [p for p in qp for _ in range(2)]
    mc = [c for c in qc for _ in range(2)]
    qf, qpt, qct = split(qp, qc, 1.2)
    gf, gpt, gct = split(gp, gc, 1.2)
    mf, mpt, mct = split(mp, mc, 1.2)
    gpt[0] = 13  # a gallery identity no query has
    qpt[-1], qct[-1] = 13, gct[0]  # ... and a query seen only by that camera: no true match, skipped
    feats = {"query_feats": qf, "query_pids": qpt, "query_camids": qct,
             "query_paths": [f"data/x/query/{p:04d}_c{c}_{i}.jpg" for i, (p, c) in enumerate(zip(qp, qc))],
             "gallery_feats": gf, "gallery_pids": gpt, "gallery_camids": gct,
             "mq_feats": mf, "mq_pids": mpt, "mq_camids": mct, "meta": {"flip": "false"}}
    torch.save(feats, path)
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    record = evaluate(features=features_file(d / "features.pt"), out=d / "metrics.json",
                      per_query_out=d / "per_query.csv", max_rank=10, rerank=RERANK,
                      bootstrap=BootstrapConfig.from_dict({"resamples": 500, "seed": 0}),
                      inputs={"model": "mutual", "seed": 0})
    return d, record


def test_per_query_csv_reproduces_every_scalar_exactly(evaluated):
    d, _ = evaluated
    metrics = json.loads((d / "metrics.json").read_text())
    with open(d / "per_query.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["protocol", "query", "pid", "camid", "first_match_rank", "ap", "ap_trapezoid", "inp"]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    assert protocols == list(U.PROTOCOLS)
    checked = 0
    for protocol in protocols:
        mine = [r for r in rows if r["protocol"] == protocol]
        assert [r["query"] for r in mine] == [r["query"] for r in rows[:len(mine)]]
        assert mine[0]["query"].startswith("query/") and len(mine) == 24
        valid = [r for r in mine if r["first_match_rank"]]
        assert len(valid) == 23  # the pid-13 query has no true match: empty rank and APs
        skipped = next(r for r in mine if not r["first_match_rank"])
        assert skipped["pid"] == "13" and skipped["ap"] == skipped["ap_trapezoid"] == skipped["inp"] == ""
        prefix = "" if protocol == "single" else protocol + "/"
        ranks = np.array([int(r["first_match_rank"]) for r in valid])
        for k in (1, 5, 10, 20):
            assert metrics[prefix + f"rank{k}"] == np.mean(ranks <= k)
        for col, key in (("ap", "mAP"), ("ap_trapezoid", "mAP_trapezoid"), ("inp", "mINP")):
            assert metrics[prefix + key] == np.mean([float(r[col]) for r in valid]), prefix + key
            checked += 1
        # the CMC curve of metrics.json is the same rows' cumulative shares
        assert metrics[prefix + "cmc"][2] == np.mean(ranks <= 3)
    assert checked == 18


def test_every_scalar_key_has_a_95_interval_around_it(evaluated):
    d, record = evaluated
    metrics = json.loads((d / "metrics.json").read_text())
    scalars = {k for k, v in metrics.items() if isinstance(v, float) and "/" in k or k in keys.METRICS}
    assert scalars == set(metrics["ci95"]) and len(scalars) == 6 * 7
    for key, (low, high) in metrics["ci95"].items():
        assert 0.0 <= low <= metrics[key] <= high <= 1.0, key
    assert metrics["bootstrap"] == {"resamples": 500, "seed": 0, "over": "query identities", "identities": 12}
    # what the evaluate stage logs to MLflow beside the values
    logged = interval_metrics(record)
    assert logged["rank1_ci95_low"] == metrics["ci95"]["rank1"][0]
    assert logged["multi_query_max/rerank/mAP_ci95_high"] == metrics["ci95"]["multi_query_max/rerank/mAP"][1]
    # the same intervals come back from the file alone
    again = U.model_intervals(U.read_per_query_csv(d / "per_query.csv"), resamples=500, seed=0)
    assert again["ci95"] == metrics["ci95"]


def test_bad_bootstrap_settings_are_refused_before_anything_is_written(tmp_path):
    feats = features_file(tmp_path / "features.pt")
    with pytest.raises(ConfigError, match=r"config 'evaluate.bootstrap': invalid\n  resamples: 0 is less than"):
        evaluate(features=feats, out=tmp_path / "m.json", per_query_out=tmp_path / "p.csv", max_rank=10,
                 rerank=RERANK, bootstrap=BootstrapConfig.from_dict({"resamples": 0, "seed": 0}), inputs={})
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "p.csv").exists()
