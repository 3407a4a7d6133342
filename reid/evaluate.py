"""The evaluation stage: metrics.json from features.pt, every protocol the paper reports.

Single query and (where gt_bbox exists) multi-query with mean and max pooling, each with and
without k-reciprocal re-ranking; both AP conventions. Plain ``rank1``/``mAP`` are single-query,
step-AP values; other protocols carry a prefix (``rerank/``, ``multi_query_mean/``, ...).

Beside metrics.json the stage writes per_query.csv, one row per (protocol, query) (format:
reid.metrics.uncertainty), and metrics.json's scalars are exactly these rows' means. ``ci95`` holds a
95% percentile bootstrap interval over query identities for every scalar key.
"""

from __future__ import annotations

from pathlib import Path

from reid import files
from reid.files import load_features
from reid.metrics import DEFAULT_MEMORY_GB, evaluate_protocols, flat_metrics
from reid.metrics import keys, uncertainty
from reid.typed_config import BootstrapConfig, RerankConfig

MULTI_QUERY_POOLINGS = ("mean", "max")


def compute_metrics(feats: dict, *, max_rank: int, rerank: RerankConfig, device=None,
                    memory_gb: float = DEFAULT_MEMORY_GB) -> dict:
    """Flat metrics of every protocol (reid.metrics.flat_metrics), "counts", and "per_query":
    {protocol: {column: array}}, the per-query columns of reid.metrics.keys ("first_match_rank" int64,
    1-based, 0 = no true match; "ap", "ap_trapezoid", "inp" float64, NaN = no true match; any
    registered column) in query order, for the protocols of reid.metrics.keys.PROTOCOLS ("single",
    "rerank", "multi_query_mean", ...).

    Queries are ranked in blocks within `memory_gb` GiB of working memory, and the gallery-side part
    of re-ranking is done once for all protocols (reid.metrics.stream); the numbers do not depend on
    the budget.
    """
    q, g = feats["query_feats"], feats["gallery_feats"]
    qp, gp, qc, gc = feats["query_pids"], feats["gallery_pids"], feats["query_camids"], feats["gallery_camids"]
    max_rank = min(max_rank, len(gp))
    rr = {"k1": rerank.k1, "k2": rerank.k2, "lambda_value": rerank.lambda_value}
    mq = None
    if "mq_feats" in feats and len(feats["mq_feats"]):
        mq = (feats["mq_feats"], feats["mq_pids"], feats["mq_camids"])
    results = evaluate_protocols(q, g, qp, gp, qc, gc, max_rank=max_rank, rerank=rr, multi_query=mq,
                                 poolings=MULTI_QUERY_POOLINGS, memory_gb=memory_gb, device=device)
    out = flat_metrics(results)
    # the count of queries with a true match goes to "counts"
    valid_queries = {keys.prefix(p) or "single_query": int(full["num_valid_queries"]) for p, full in results.items()}
    out["counts"] = {"query": len(qp), "gallery": len(gp), "valid_queries": valid_queries}
    out["per_query"] = {p: full["per_query"] for p, full in results.items()}
    return out


def query_names(paths) -> list[str]:
    """Query image paths relative to the dataset folder (``query/0001_c1s1_000151_00.jpg``)."""
    return [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]


def evaluate(*, features: Path, out: Path, per_query_out: Path, max_rank: int, rerank: RerankConfig,
             bootstrap: BootstrapConfig, inputs: dict, device=None, memory_gb: float | None = None) -> dict:
    """Write per_query.csv and metrics.json (with ``ci95``) as one unit (reid.io.commit_together: both
    replaced, or neither); returns the metrics.json record.

    rerank, bootstrap: config ``evaluate.rerank`` and ``evaluate.bootstrap`` (reid.typed_config,
    already checked by the schema).
    memory_gb: the working-memory budget of the evaluation (config ``evaluate.memory_gb``).
    """
    return evaluate_loaded(load_features(features), source=str(features), out=out, per_query_out=per_query_out,
                           max_rank=max_rank, rerank=rerank, bootstrap=bootstrap, inputs=inputs, device=device,
                           memory_gb=memory_gb)


def evaluate_loaded(feats: dict, *, source: str, out: Path, per_query_out: Path, max_rank: int,
                    rerank: RerankConfig, bootstrap: BootstrapConfig, inputs: dict, device=None,
                    memory_gb: float | None = None) -> dict:
    """`evaluate` on features already in memory (the layout of features.pt; reid.external reads other
    tools' files into it). ``source`` names them in messages and in metrics.json's "features"."""
    metrics = compute_metrics(feats, max_rank=max_rank, rerank=rerank, device=device,
                              memory_gb=DEFAULT_MEMORY_GB if memory_gb is None else memory_gb)
    if "query_paths" not in feats:
        raise ValueError(f"{source}: missing 'query_paths' (per_query.csv names every query)")
    table = uncertainty.per_query_table(metrics.pop("per_query"), query_names(feats["query_paths"]),
                                        feats["query_pids"], feats["query_camids"])
    # metrics.json's scalars are the per-query rows' reductions (reid.metrics.keys.metric_values, as
    # uncertainty.estimates of the table): the table was made from the very arrays they were computed from
    intervals = uncertainty.model_intervals(table, resamples=bootstrap.resamples, seed=bootstrap.seed)
    # how the test embeddings were made travels with the numbers (the tables print it)
    flip = feats.get("meta", {}).get("flip", "false")
    flip = {"true": True, "false": False}.get(flip)  # None (JSON null): made by another tool, not known
    # unit-length features (evaluate.feature_norm l2) are the default, recorded only when not used
    norm = feats.get("meta", {}).get("feature_norm", "l2")
    record = {**metrics, **inputs, "features": source, "flip_test": flip,
              **({"feature_norm": norm} if norm != "l2" else {}), "ci95": intervals["ci95"],
              "bootstrap": {"resamples": bootstrap.resamples, "seed": bootstrap.seed,
                            "over": "query identities", "identities": len(uncertainty.identities(table))}}
    # both files or neither, metrics.json recording which per_query.csv it is the means of
    return files.write_evaluation(out, per_query_out, record, table)


def scalar_metrics(record: dict) -> dict:
    """The numeric, non-curve entries of a metrics record (what goes to MLflow as values)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("seed",)}


def interval_metrics(record: dict) -> dict:
    """The ci95 bounds as MLflow metrics: ``rank1_ci95_low``, ``rerank/mAP_ci95_high``, ..."""
    out = {}
    for key, (low, high) in record.get("ci95", {}).items():
        out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = low, high
    return out


def curves(record: dict) -> dict:
    return {k: v for k, v in record.items() if keys.is_curve(k)}


def provenance(features_meta: dict, run_info: dict | None, settings: dict, *, features: str = "features.pt",
               run_info_path: str = "run.json") -> dict:
    """metrics.json's provenance fields: what was evaluated, and how.

    From the training run's ``run_info`` (run.json, reid.files.load_run_info) when given: dataset,
    model, seed, config hash, git commit, and the MLflow run and LoggedModel ids when MLflow recorded
    the run; else from ``features_meta`` (features.pt's meta) alone. ``settings`` goes in as
    ``evaluate_config``. Raises ValueError, naming both files, when run.json and features.pt
    describe different runs (a features file left from another model).
    """
    if run_info is None:
        seed = str(features_meta.get("seed", ""))
        return {"dataset": features_meta.get("dataset"), "model": features_meta.get("variant"),
                "seed": int(seed) if seed.isdigit() else None, "config_hash": features_meta.get("config_hash"),
                "evaluate_config": settings}
    for key, meta_key in (("dataset", "dataset"), ("model", "variant"), ("seed", "seed"),
                          ("config_hash", "config_hash")):
        if meta_key in features_meta and str(features_meta[meta_key]) != str(run_info[key]):
            raise ValueError(f"{features} was made from {meta_key} {features_meta[meta_key]!r} but {run_info_path} "
                             f"describes {key} {run_info[key]!r}: extract the features again from this run's model")
    out = {k: run_info[k] for k in ("dataset", "model", "seed", "config_hash")}
    out["git_commit"] = run_info.get("git_commit")
    for key in ("mlflow_run_id", "logged_model_id"):
        if key in run_info:
            out[key] = run_info[key]
    out["evaluate_config"] = settings
    return out


def cross_domain_inputs(inputs: dict, test_dataset: str | None) -> dict:
    """The provenance of a cross-domain evaluation: ``dataset`` becomes the test set the numbers were
    measured on, ``train_dataset`` the one the model was trained on. In-domain (``test_dataset`` None or
    the training set) the inputs are returned unchanged, so in-domain metrics.json keep their keys."""
    if test_dataset is None or test_dataset == inputs.get("dataset"):
        return inputs
    return {**inputs, "dataset": test_dataset, "train_dataset": inputs.get("dataset")}


def evaluation_settings(record: dict, features_meta: dict, *, max_rank: int, rerank: dict, bootstrap: dict) -> dict:
    """What makes one evaluation of a model differ from another (a tracker records them: MLflow's
    ``eval.*`` parameters): flip test, max rank, the test embedding, re-ranking and bootstrap."""
    # only a variant with several test embeddings has a choice (reid.variants); extraction may have
    # chosen another one than training did (reid extract --test-embedding): features.pt says which
    from reid.variants import REGISTRY

    variant = REGISTRY.get(str(features_meta.get("variant")))
    chooses = variant is not None and variant.chooses_test_embedding
    test_embedding = features_meta.get("test_embedding", "unknown" if chooses else "single")
    norm = features_meta.get("feature_norm", "l2")  # recorded when not the default, as in metrics.json
    return {"flip": bool(record.get("flip_test")), **({"feature_norm": norm} if norm != "l2" else {}),
            "max_rank": max_rank, "test_embedding": test_embedding,
            "rerank": {"k1": rerank["k1"], "k2": rerank["k2"], "lambda": rerank["lambda"]},
            "bootstrap": dict(bootstrap)}


def evaluated_split(feats: dict, dataset: str | None, source: str) -> dict:
    """The evaluation dataset as a tracker records it: name, digest of its image list, folder."""
    import hashlib
    import os.path

    paths = [*feats.get("query_paths", []), *feats.get("gallery_paths", [])]
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:12]
    folder = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else source
    return {"name": f"{dataset}/test", "digest": digest, "source": folder}


def evaluate_run(*, features: Path, run_info: Path | None, out: Path, per_query_out: Path, max_rank: int,
                 rerank: RerankConfig, bootstrap: BootstrapConfig, tracker=None, memory_gb: float | None = None,
                 test_dataset: str | None = None) -> dict:
    """The evaluate stage as the workflow runs it: metrics.json and per_query.csv of ``features``, the
    provenance from ``run_info`` (run.json of the training run; None: from features.pt alone), and,
    when ``run_info`` is given, the evaluation reported to ``tracker`` (reid.tracking; None: not
    reported). ``test_dataset``: a cross-domain evaluation's test set (cross_domain_inputs).
    Returns the metrics.json record. Raises as evaluate and reid.files.load_run_info."""
    from reid.files import load_run_info

    info = load_run_info(run_info) if run_info is not None else None  # fail before the work
    feats = load_features(features)
    meta = dict(feats.get("meta", {}))
    settings = {"max_rank": max_rank, "rerank": rerank.as_dict(), "bootstrap": bootstrap.as_dict()}
    inputs = provenance(meta, info, settings, features=str(features), run_info_path=str(run_info))
    inputs = cross_domain_inputs(inputs, test_dataset)
    record = evaluate_loaded(feats, source=str(features), out=out, per_query_out=per_query_out, max_rank=max_rank,
                             rerank=rerank, bootstrap=bootstrap, inputs=inputs, memory_gb=memory_gb)
    if info is not None and tracker is not None:
        counts = record.get("counts", {})
        tracker.log_evaluation(info, {**scalar_metrics(record), **interval_metrics(record)},
                               evaluation_settings(record, meta, max_rank=max_rank, rerank=rerank.as_dict(),
                                                   bootstrap=bootstrap.as_dict()),
                               test_data=evaluated_split(feats, inputs["dataset"], str(features)), curves=curves(record),
                               artifacts=[Path(out)],
                               data_params={"data": {"query_images": counts.get("query"),
                                                     "gallery_images": counts.get("gallery")}},
                               test_dataset=inputs["dataset"] if "train_dataset" in inputs else None)
    return record
