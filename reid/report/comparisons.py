"""results/{dataset}/comparisons.json: every model's intervals over its seeds, and every pair's paired difference.

Built from the evaluate stage's files only (metrics.json says which dataset, model and seed a
per_query.csv beside it belongs to); the statistics are in reid.metrics.uncertainty. The tables read
this file for their interval cells and their paired-comparison section.

    {"dataset": ..., "bootstrap": {"resamples", "seed", "confidence", "identities", "queries", "method"},
     "models": {model: {"seeds": [...], "estimate": {key: fraction}, "ci95": {key: [low, high]}}},
     "pairs": [{"a": model, "b": model, "seeds": [...],
                "differences": {key: {"difference", "ci95", "p_value", "significant"}}}]}

Pairs follow the registry's order of variants (reid.variants; ``a`` before ``b``), differences are B minus A over the seeds both have.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from reid import files
from reid.metrics import uncertainty as U
from reid import variants
from reid.report.runs import ReportInputError, Run, pipeline_file

METHOD = ("95% percentile bootstrap resampling query identities (all queries of a person together); "
          "with several seeds, the seeds are resampled too and each replicate averages the drawn seeds "
          "over one shared identity resample; pairs use the same resamples for both models")


def _per_query_of(runs: list[Run], per_query_paths: list[str | Path]) -> dict[tuple[str, int], U.PerQuery]:
    by_dir: dict[Path, Path] = {}
    for p in map(Path, per_query_paths):
        if p.parent in by_dir:
            raise ReportInputError(f"{p}: two per-query files in one run folder ({by_dir[p.parent]})")
        by_dir[p.parent] = p
    tables = {}
    for r in runs:
        path = by_dir.get(r.path.parent)
        if path is None:
            raise ReportInputError(f"{r.path}: no per_query.csv given from its folder {r.path.parent}")
        with pipeline_file():
            tables[(r.model, r.seed)] = files.load_per_query(path, r.info, r.path)
    return tables


def build(runs: list[Run], per_query_paths: list[str | Path], dataset: str, *, resamples: int, seed: int) -> dict:
    """The comparisons.json record for one dataset; raises ReportInputError on inconsistent inputs."""
    runs = [r for r in runs if r.dataset == dataset]
    if not runs:
        raise ReportInputError(f"comparisons: no metrics.json of dataset '{dataset}' among the inputs")
    tables = _per_query_of(runs, per_query_paths)
    seeds = {m: sorted(s for mm, s in tables if mm == m) for m in variants.names()}
    seeds = {m: s for m, s in seeds.items() if s}
    first = next(iter(tables.values()))
    cache: dict[int, U.Bootstrap] = {}

    def boot(n_seeds: int) -> U.Bootstrap:
        # identities are drawn first: every seed count shares the same identity resamples
        if n_seeds not in cache:
            cache[n_seeds] = U.Bootstrap(first, n_seeds, resamples, seed)
        return cache[n_seeds]

    reps: dict[tuple[str, tuple[int, ...]], tuple] = {}

    def replicates(model: str, model_seeds: list[int]):
        # each model's replicates once per seed set: its intervals and all its pairs reuse them
        key = (model, tuple(model_seeds))
        if key not in reps:
            reps[key] = boot(len(model_seeds)).replicates([tables[(model, x)] for x in model_seeds])
        return reps[key]

    try:
        models = {}
        for m, s in seeds.items():
            models[m] = {"seeds": s, **U.model_intervals([tables[(m, x)] for x in s], bootstrap=boot(len(s)),
                                                         replicates=replicates(m, s))}
        pairs = []
        for a, b in itertools.combinations(seeds, 2):
            common = sorted(set(seeds[a]) & set(seeds[b]))
            if not common:
                continue
            diffs = U.compare_models([tables[(a, x)] for x in common], [tables[(b, x)] for x in common],
                                     bootstrap=boot(len(common)),
                                     replicates=(*replicates(a, common), *replicates(b, common)))
            pairs.append({"a": a, "b": b, "seeds": common, "differences": diffs})
    except ValueError as e:
        raise ReportInputError(f"comparisons for '{dataset}': {e}") from None
    return {"dataset": dataset,
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": U.CONFIDENCE, "method": METHOD,
                          "identities": int(len(U.identities(first))), "queries": int(len(first.queries))},
            "models": models, "pairs": pairs}
