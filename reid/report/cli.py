"""The report verbs of ``python -m reid``: reid/cli.py calls ``add_report_commands(subparsers)``.

Each verb sets ``func`` to a callable taking the parsed namespace; the dataset descriptions come
from the rule as JSON (``--dataset-specs '{"synthetic": {"source": "synthetic"}}'``), the same
``dataset:`` section of config.yaml, so a table knows whether its data is the paper's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reid import readings as READINGS
from reid.options import bounded
from reid.report.runs import ReportInputError
from reid.variants import get_variant


def _specs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportInputError(f"--dataset-specs: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ReportInputError("--dataset-specs: expected a JSON object mapping dataset name -> config section")
    from reid.config import ConfigError, validate_section

    for name, spec in value.items():  # the same checks as config.yaml's `dataset.<name>`, before any work
        try:
            validate_section(spec, "$defs.dataset", f"--dataset-specs entry '{name}' (config 'dataset.{name}')")
        except ConfigError as e:
            raise ReportInputError(str(e)) from None
    return value


def _info(specs: dict, name: str):
    from reid.data.kinds import kind_of
    from reid.report.paper import describe_dataset

    if name not in specs:
        raise ReportInputError(f"--dataset-specs has no entry for dataset '{name}' (has: {', '.join(specs) or 'none'})")
    try:
        kind = kind_of(specs[name]) if isinstance(specs[name], dict) else None
    except ValueError as e:
        raise ReportInputError(f"dataset '{name}': {e}") from None
    return describe_dataset(name, specs[name], kind)


def _cmd_table(args: argparse.Namespace) -> int:
    from reid.report import tables
    from reid.report.runs import load_runs

    specs = _specs(args.dataset_specs)
    runs = load_runs(args.metrics)
    comparisons = tables.load_comparisons(args.comparisons) if args.comparisons else None
    if args.report_table == "table1":
        doc = tables.table1(runs, [_info(specs, n) for n in args.datasets], comparisons)
    else:
        build = tables.table2 if args.report_table == "table2" else tables.table3
        notes = json.loads(args.recipe_notes) if args.recipe_notes else None
        doc = build(runs, _info(specs, args.dataset), args.backbone, comparisons, notes)
    for path in tables.write(doc, args.out, args.html_out):
        print(f"wrote {path}")
    return 0


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    """--pairs TRAIN:TEST ... (config cross_domain)."""
    out = []
    for value in values:
        train, sep, test = value.partition(":")
        if not sep or not train or not test or ":" in test:
            raise ReportInputError(f"--pairs: {value!r} is not TRAIN:TEST (two dataset names)")
        out.append((train, test))
    return out


def _cmd_table_cross_domain(args: argparse.Namespace) -> int:
    from reid.report import tables
    from reid.report.runs import load_runs

    specs = _specs(args.dataset_specs)
    pairs = _pairs(args.pairs)
    names = list(dict.fromkeys(d for pair in pairs for d in pair))
    doc = tables.cross_domain_table(load_runs(args.in_domain), load_runs(args.cross_domain), pairs,
                                    {n: _info(specs, n) for n in names}, args.backbone)
    for path in tables.write(doc, args.out, args.html_out):
        print(f"wrote {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from reid.files.comparisons import write_comparisons
    from reid.report import comparisons
    from reid.report.runs import load_runs

    bootstrap = _bootstrap(args.bootstrap)
    record = comparisons.build(load_runs(args.metrics), args.per_query, args.dataset,
                               resamples=bootstrap["resamples"], seed=bootstrap["seed"])
    write_comparisons(args.out, record)
    print(f"wrote {args.out}")
    return 0


def _bootstrap(text: str) -> dict:
    """--bootstrap JSON (config evaluate.bootstrap), checked against the same schema as config.yaml
    and completed with its defaults (reid.config.parse_json_arg)."""
    from reid.config import ConfigError, parse_json_arg

    try:
        return parse_json_arg(text, "--bootstrap (config 'evaluate.bootstrap')", "evaluate.bootstrap")
    except ConfigError as e:
        raise ReportInputError(str(e)) from None


def _cmd_table_readings(args: argparse.Namespace) -> int:
    from reid.report import tables
    from reid.report.readings import readings_table

    bootstrap = _bootstrap(args.bootstrap)
    doc = readings_table(Path(args.results), args.dataset, args.seeds, _info(_specs(args.dataset_specs), args.dataset),
                         bootstrap=bootstrap, ablation=args.ablation)
    for path in tables.write(doc, args.out, args.html_out):
        print(f"wrote {path}")
    return 0


def _cmd_table_benchmarks(args: argparse.Namespace) -> int:
    from reid.report.benchmarks import write_table

    for path in write_table(args.benchmarks, args.root, args.out, args.html_out):
        print(f"wrote {path}")
    return 0


def _cmd_figure_losses(args: argparse.Namespace) -> int:
    from reid.report import figures

    _pair_check(args, "history", "models")
    labels = _labels(args.models)
    out = figures.losses_figure(dict(zip(labels, args.history)), args.out, title=args.title,
                                colours={label: get_variant(m).colour for label, m in zip(labels, args.models)})
    print(f"wrote {out}")
    return 0


def _cmd_figure_cmc(args: argparse.Namespace) -> int:
    from reid.report import figures
    from reid.report.runs import load_runs

    out = figures.cmc_figure(load_runs(args.metrics), args.out, title=args.title, max_rank=args.max_rank)
    print(f"wrote {out}")
    return 0


def _cmd_figure_ranked(args: argparse.Namespace) -> int:
    from reid.report import figures

    _pair_check(args, "features", "models")
    out = figures.ranked_figure(dict(zip(_labels(args.models), args.features)), args.out, root=Path(args.root),
                                n_queries=args.queries, top_k=args.top_k, seed=args.seed, title=args.title)
    print(f"wrote {out}")
    return 0


def _cmd_figure_attention(args: argparse.Namespace) -> int:
    from reid.report import figures

    _pair_check(args, "model", "models")
    out = figures.attention_figure_from_files(
        dict(zip(_labels(args.models), args.model)), features_path=Path(args.features), mean_image=Path(args.mean_image),
        out=args.out, root=Path(args.root), n_images=args.images, seed=args.seed, title=args.title)
    print(f"wrote {out}")
    return 0


def _cmd_report_mlflow(args: argparse.Namespace) -> int:
    from reid.report.publish import log_report_artifacts

    log_report_artifacts([Path(p) for p in args.run_info], [Path(p) for p in args.files], Path(args.done),
                         artifact_path=args.artifact_path)
    return 0


def _labels(models: list[str]) -> list[str]:
    """Each variant's short label (reid.variants), as figures name the models."""
    try:
        return [get_variant(m).short_label for m in models]
    except ValueError as e:
        raise ReportInputError(f"--models: {e}") from None


def _pair_check(args: argparse.Namespace, a: str, b: str) -> None:
    if len(getattr(args, a)) != len(getattr(args, b)):
        raise ReportInputError(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} must have the same number "
                               f"of values ({len(getattr(args, a))} vs {len(getattr(args, b))})")


def add_report_commands(subparsers) -> None:
    """Register table1, table2, table3, table-readings, table-cross-domain, table-benchmarks, compare,
    figure-losses, figure-cmc, figure-ranked, figure-attention, report-mlflow."""
    for verb, what in (("table1", "Table 1: the mutual model on each dataset, beside the paper's values"),
                       ("table2", "Table 2: Rank-1/mAP, the paper's DukeMTMC-reID rows then ours"),
                       ("table3", "Table 3: single/multi-query Rank-1/mAP, the paper's Market-1501 rows then ours")):
        p = subparsers.add_parser(verb, help=what, description=what)
        p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files (all models and seeds)")
        p.add_argument("--comparisons", nargs="+", default=None,
                       help="comparisons.json of each dataset: interval cells over seeds, paired-comparison section")
        p.add_argument("--dataset-specs", required=True,
                       help="JSON: dataset name -> its section of config.yaml's 'dataset:'")
        if verb == "table1":
            p.add_argument("--datasets", nargs="+", required=True, help="the datasets, one column group each")
        else:
            p.add_argument("--dataset", required=True, help="the dataset of the reproduced rows")
            p.add_argument("--backbone", required=True, help="model.backbone of the reproduced rows (row labels)")
            p.add_argument("--recipe-notes", default=None,
                           help="JSON: model -> how its recipe's settings depart from the published ones (caption)")
        p.add_argument("--out", required=True, help="the markdown table")
        p.add_argument("--html-out", default=None, help="also write the table as a self-contained HTML page")
        p.set_defaults(func=_cmd_table, report_table=verb)

    what = "the cross-domain table: models trained on one dataset, tested on others (config cross_domain)"
    p = subparsers.add_parser("table-cross-domain", help=what, description=what)
    p.add_argument("--cross-domain", nargs="+", required=True,
                   help="metrics.json of every cross-domain run (results/cross_domain/<train>_to_<test>/...)")
    p.add_argument("--in-domain", nargs="+", required=True,
                   help="metrics.json of each training set's own runs (the diagonal)")
    p.add_argument("--pairs", nargs="+", required=True, metavar="TRAIN:TEST", help="the configured pairs, in order")
    p.add_argument("--dataset-specs", required=True,
                   help="JSON: dataset name -> its section of config.yaml's 'dataset:'")
    p.add_argument("--backbone", required=True, help="model.backbone (row labels)")
    p.add_argument("--out", required=True, help="the markdown table")
    p.add_argument("--html-out", default=None)
    p.set_defaults(func=_cmd_table_cross_domain)

    p = subparsers.add_parser("compare", help="comparisons.json: intervals over seeds and paired model differences")
    p.add_argument("--dataset", required=True)
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files (all models and seeds)")
    p.add_argument("--per-query", nargs="+", required=True, help="per_query.csv files, one beside each metrics.json")
    p.add_argument("--bootstrap", required=True, help='JSON {"resamples": N, "seed": S} (config evaluate.bootstrap)')
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_compare)

    what = "a readings ablation: every reading of one ablation of reid/readings.py against its reference"
    p = subparsers.add_parser("table-readings", help=what, description=what)
    p.add_argument("--results", default="results",
                   help="the results folder (readings under <results>/<dataset>/readings)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--seeds", nargs="+", type=bounded("seeds[]", "--seeds"), required=True)
    p.add_argument("--dataset-specs", required=True,
                   help="JSON: dataset name -> its section of config.yaml's 'dataset:'")
    p.add_argument("--bootstrap", required=True, help='JSON {"resamples": N, "seed": S} (config evaluate.bootstrap)')
    p.add_argument("--out", required=True, help="the markdown table")
    p.add_argument("--html-out", default=None)
    p.add_argument("--ablation", default="paper", choices=tuple(READINGS.ABLATIONS),
                   help="paper: the paper's readings (readings.md); bot: the strong baseline's tricks (readings_bot.md)")
    p.set_defaults(func=_cmd_table_readings)

    what = "the cost of each train, extract and evaluate job: its Snakemake benchmark file's wall time and peak memory"
    p = subparsers.add_parser("table-benchmarks", help=what, description=what)
    p.add_argument("--benchmarks", nargs="+", required=True,
                   help="benchmark files (<root>/<rule>/<job>.tsv); a missing one is a row without values")
    p.add_argument("--root", default="results/benchmarks", help="the folder holding one folder per rule")
    p.add_argument("--out", required=True, help="the markdown table")
    p.add_argument("--html-out", default=None)
    p.set_defaults(func=_cmd_table_benchmarks)

    p = subparsers.add_parser("figure-losses", help="Figure 6: identification and verification loss per epoch")
    p.add_argument("--history", nargs="+", required=True, help="history.csv files, one per model")
    p.add_argument("--models", nargs="+", required=True,
                   help="the model variant of each history file (labels and colours: reid.variants)")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_figure_losses)

    p = subparsers.add_parser("figure-cmc", help="CMC curves, each model with and without re-ranking")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--max-rank", type=bounded("evaluate.max_rank", "--max-rank"), default=50)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_figure_cmc)

    p = subparsers.add_parser("figure-ranked", help="Figure 5: queries and their top-k gallery images")
    p.add_argument("--features", nargs="+", required=True, help="features.pt files, one per model")
    p.add_argument("--models", nargs="+", required=True, help="the model variant of each file (reid.variants)")
    p.add_argument("--root", default=".", help="directory the image paths in features.pt are relative to")
    p.add_argument("--queries", type=bounded("$defs.count", "--queries"), default=4)
    p.add_argument("--top-k", type=bounded("evaluate.max_rank", "--top-k"), default=10)
    p.add_argument("--seed", type=bounded("$defs.seed", "--seed"), default=0, help="which queries are drawn")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_figure_ranked)

    p = subparsers.add_parser("figure-attention", help="Figure 4: layer4 activation maps over the input")
    p.add_argument("--model", nargs="+", required=True, help="model.pt files, one per model")
    p.add_argument("--models", nargs="+", required=True, help="the model variant of each file (reid.variants)")
    p.add_argument("--features", required=True, help="a features.pt whose query_paths supply the images")
    p.add_argument("--mean-image", required=True)
    p.add_argument("--root", default=".")
    p.add_argument("--images", type=bounded("$defs.count", "--images"), default=6)
    p.add_argument("--seed", type=bounded("$defs.seed", "--seed"), default=0)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_figure_attention)

    p = subparsers.add_parser("report-mlflow", help="log tables and figures to the runs as MLflow artifacts")
    p.add_argument("--run-info", nargs="+", required=True, help="run.json of each training run to attach the files to")
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--artifact-path", default="report")
    p.add_argument("--done", required=True, help="marker file written after logging (the rule's output)")
    p.set_defaults(func=_cmd_report_mlflow)
