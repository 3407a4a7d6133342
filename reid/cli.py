"""One entry point, ``python -m reid <verb>``: each verb is one pipeline stage, a function of its files.

Rules pass each config section they depend on as JSON (so a change to that section, and only to
it, reruns the rule).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from reid.config import ConfigError, parse_json_arg
from reid.options import bounded
from reid.tracking import TRACKERS


def _json(what: str, section: str | None = None):
    """An argparse type for a JSON config section. argparse would replace a ValueError's message with
    "invalid <lambda> value"; an ArgumentTypeError's message is shown as it is."""

    def parse(text: str) -> dict:
        try:
            return parse_json_arg(text, what, section)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = what  # what argparse prints should it ever fall back to the type's name
    return parse


def _typed(cls, what: str):
    """An argparse type for a JSON config section read into its typed class (reid.typed_config):
    checked by the schema and completed with its defaults, errors naming ``what`` and the key."""

    def parse(text: str):
        try:
            return cls.from_dict(parse_json_arg(text, what), what)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = what
    return parse


def cmd_init_tracking(args) -> None:
    from reid import tracking

    uri = tracking.tracking_uri(args.uri)
    tracking.init_store(uri, [tracking.experiment_name(args.prefix, d) for d in args.datasets])
    print(f"MLflow store ready: {uri}")


def cmd_synthesize(args) -> None:
    from reid.data.synthetic import synthesize_dataset

    summary = synthesize_dataset(args.out, args.params, args.manifest)
    print(json.dumps(summary, indent=2))


def cmd_fetch(args) -> None:
    """A dataset archive (spec is a `dataset.<name>` section) or weights file, placed by the user or downloaded."""
    from reid.data.fetch import fetch_spec

    path = fetch_spec(args.spec, Path(args.resources))
    print(f"{path}: present and verified")


def cmd_prepare(args) -> None:
    from reid.data.prepare import prepare_into

    source = prepare_into(args.spec, Path(args.source), Path(args.out),
                          failed_report=Path(args.failed_report) if args.failed_report else None,
                          manifest=args.manifest)
    print(json.dumps(source, indent=2, sort_keys=True))
    print(f"{args.out}: laid out in Market-1501 layout from {args.source}")


def cmd_verify(args) -> None:
    from reid.data.verify import verify_into

    images = verify_into(args.dataset, args.spec, Path(args.data), Path(args.report), Path(args.mean_image),
                         manifest=args.manifest)
    print(f"{args.data}: verified; report {args.report}; mean image of {images} training images")


def cmd_train(args) -> None:
    import dataclasses

    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    out = Path(args.out_dir)
    variant, model_cfg, chosen = args.model, args.model_params, None
    if args.reading:  # the readings ablation: the reading says the variant and its model keys
        from reid.readings import reading

        chosen = reading(args.reading)
        if not chosen.trains:
            raise ConfigError(f"train: reading {chosen.name!r} evaluates the model of {chosen.model_of!r}; train that")
        variant = chosen.variant
        model_cfg = ModelConfig.from_dict(chosen.model_config(model_cfg.as_dict()), f"reading {chosen.name!r}")
        args.train_params = TrainConfig.from_dict(chosen.train_config(args.train_params.as_dict()),
                                                  f"reading {chosen.name!r}")
    elif variant is None:
        raise ConfigError("train: give --model or --reading")
    if args.custom_model is not None:
        from reid.plugins import register_custom

        register_custom(variant, args.custom_model, "--custom-model")
    from reid.variants import get_variant

    spec = get_variant(variant)  # an unknown name stops here, naming the known ones
    recipe_cfg = _recipe_section(spec.recipe, args.recipe_params)
    if chosen is not None and chosen.recipe_overrides:  # a reading of the recipe's own keys (the bot ablation)
        if recipe_cfg is None:
            raise ConfigError(f"reading {chosen.name!r}: overrides recipe keys, but training recipe {spec.recipe!r} "
                              "has no config section of its own")
        recipe_cfg = type(recipe_cfg).from_dict(chosen.recipe_config(recipe_cfg.SECTION, recipe_cfg.as_dict()),
                                                f"reading {chosen.name!r}")
    # workers and device change how training runs, not its numbers: the workflow passes them apart
    # from the JSON section (which the schema completed with their defaults), so that changing them
    # reruns nothing (reid.config.RUNTIME_KEYS)
    train_cfg = dataclasses.replace(args.train_params, **{k: v for k, v in (("workers", args.workers),
                                                                             ("device", args.device)) if v is not None})
    history = train(data_root=Path(args.data), mean_image=Path(args.mean_image), dataset=args.dataset,
                    variant=variant, seed=args.seed, model_cfg=model_cfg, train_cfg=train_cfg,
                    custom_model=args.custom_model, recipe_cfg=recipe_cfg, tracker=_tracker(args),
                    outputs=TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json"),
                    checkpoint_dir=Path(args.checkpoint_dir), threads=args.threads, reading=args.reading)
    last = history[-1] if history else {}
    print(f"trained {args.reading or variant} seed {args.seed}: " + json.dumps(last))


def _recipe_section(recipe: str, given: dict | None):
    """The typed config section of training recipe ``recipe`` (reid.recipes) from ``--recipe-params``
    (the schema fills what it leaves out); None for a recipe without one."""
    from reid import recipes
    from reid.typed_config import Config

    section = recipes.get(recipe).section
    if section is None:
        if given is not None:
            raise ConfigError(f"--recipe-params: training recipe {recipe!r} has no config section of its own")
        return None
    return Config.SECTIONS[section].from_dict(given or {}, f"--recipe-params (config '{section}')")


def cmd_extract(args) -> None:
    from reid.features import extract

    # the image counts reach MLflow with the evaluation run (metrics.json "counts"): logging them
    # here again at each re-extraction would give one metric two values at the same step
    extract(model_path=Path(args.model_file), data_root=Path(args.data), mean_image=Path(args.mean_image),
            out=Path(args.out), batch_size=args.batch_size, device=args.device, threads=args.threads,
            flip=args.flip, test_embedding=args.test_embedding, feature_norm=args.feature_norm)


def cmd_evaluate(args) -> None:
    from reid.evaluate import evaluate_run

    import torch

    torch.set_num_threads(max(1, args.threads))  # torch's default oversubscribes a shared machine
    record = evaluate_run(features=Path(args.features), run_info=Path(args.run_info) if args.run_info else None,
                          out=Path(args.out), per_query_out=Path(args.per_query_out), max_rank=args.max_rank,
                          rerank=args.rerank, bootstrap=args.bootstrap, memory_gb=args.memory_gb,
                          tracker=_tracker(args) if args.run_info else None, test_dataset=args.test_dataset)
    from reid.metrics import keys

    print(json.dumps({k: record[k] for k in keys.headline_metrics()}, indent=2))


def cmd_evaluate_features(args) -> None:
    from reid.evaluate import evaluate_loaded
    from reid.external import load_external_features

    import torch

    torch.set_num_threads(max(1, args.threads))
    path = Path(args.features_file)
    feats = load_external_features(path)
    out = Path(args.out)
    inputs = {"dataset": None, "model": None, "seed": None, "config_hash": None,
              "evaluate_config": {"max_rank": args.max_rank, "rerank": args.rerank.as_dict(),
                                  "bootstrap": args.bootstrap.as_dict()}}
    record = evaluate_loaded(feats, source=str(path), out=out / "metrics.json", per_query_out=out / "per_query.csv",
                             max_rank=args.max_rank, rerank=args.rerank, bootstrap=args.bootstrap, inputs=inputs,
                             memory_gb=args.memory_gb)
    from reid.metrics import keys

    shown = [keys.key(p, m) for p, m in (("single", "rank1"), ("single", "mAP"), ("rerank", "rank1"),
                                         ("rerank", "mAP"), ("multi_query_mean", "rank1"))]
    for key in (k for k in shown if k in record):
        print(f"{key:24s} {keys.format_interval(key, record[key], *record['ci95'][key])}")
    print(f"wrote {out / 'metrics.json'} and {out / 'per_query.csv'}")


def cmd_rank(args) -> None:
    from reid.features import rank_gallery_folder

    model_file = Path(args.model_file)
    # a pipeline model sits at results/{dataset}/{model}/seed{seed}/model.pt, its mean image at results/{dataset}/
    mean_image = Path(args.mean_image) if args.mean_image else model_file.resolve().parents[2] / "mean_image.pt"
    if not mean_image.is_file():
        raise FileNotFoundError(f"{mean_image}: the training mean image the model was trained with is not there; "
                                "give it with --mean-image (results/<dataset>/mean_image.pt)")
    ranked = rank_gallery_folder(model_path=model_file, mean_image=mean_image, query=Path(args.query),
                                 gallery=Path(args.gallery), top=args.top, device=args.device,
                                 threads=args.threads, flip=args.flip)
    for rank, (path, distance) in enumerate(ranked, start=1):
        print(f"{rank:3d}  {distance:.4f}  {path}")
    if args.out:
        from reid.report.figures import query_ranking_figure

        query_ranking_figure(args.query, ranked, args.out)
        print(f"wrote {args.out}")


def cmd_export(args) -> None:
    from reid.export_onnx import export_model_file

    result = export_model_file(model_path=Path(args.model_file), out=Path(args.out), data_root=args.data,
                               mean_image=args.mean_image, images=args.images, test_embedding=args.test_embedding,
                               threads=args.threads, tracker=_tracker(args))
    meta = result.metadata
    print(f"wrote {result.out}: ONNX opset {meta['opset']}, input images (N, 3, {meta['height']}, {meta['width']}), "
          f"output embeddings (N, {meta['embedding_dim']}); parity on {result.images} test images: "
          f"max |ONNX Runtime - PyTorch| = {result.max_abs_diff:.2e}")
    print(f"recorded with the training run: {result.logged}" if result.logged else "not recorded by a tracker")


def _tracker(args):
    """The tracker a stage reports to: --tracking, else $REID_TRACKING (set by the Snakefile from config
    mlflow.enabled), else MLflow; for MLflow, --mlflow-params when given, else the environment."""
    from reid import tracking

    mlflow_cfg = getattr(args, "mlflow_params", None) or {}
    kind = args.tracking or ("none" if mlflow_cfg.get("enabled") is False else None)
    return tracking.make_tracker(kind, mlflow_cfg.get("experiment_prefix"), mlflow_cfg.get("tracking_uri"))


def build_parser() -> argparse.ArgumentParser:
    from reid.typed_config import BootstrapConfig, ModelConfig, RerankConfig, TrainConfig

    p = argparse.ArgumentParser(prog="reid", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("init-tracking", help="create the MLflow store and experiments once, before any job")
    s.add_argument("--uri", default=None)
    s.add_argument("--prefix", default="reid")
    s.add_argument("--datasets", nargs="*", default=[])
    s.set_defaults(func=cmd_init_tracking)

    s = sub.add_parser("synthesize", help="write the synthetic dataset in Market-1501 layout")
    s.add_argument("--params", type=_json("--params (config section 'synthetic')", "synthetic"), required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--manifest", help="write this manifest once --out is in place; an existing --out is "
                                      "then replaced (only once the new dataset is complete)")
    s.set_defaults(func=cmd_synthesize)

    s = sub.add_parser("fetch", help="download or find a dataset archive under resources/, checksum verified")
    s.add_argument("--spec", type=_json("--spec (config 'dataset.<name>')"), required=True)
    s.add_argument("--resources", default="resources")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("prepare", help="lay an archive (safely extracted) or a folder out in Market-1501 layout")
    s.add_argument("--spec", type=_json("--spec (config 'dataset.<name>')", "$defs.dataset"), required=True)
    s.add_argument("--source", required=True, help="the archive file, or the dataset folder (source: folder)")
    s.add_argument("--out", required=True)
    s.add_argument("--failed-report", default=None,
                   help="where a failed verification writes its report (default: <out>.failed.json)")
    s.add_argument("--manifest", help="write this manifest once --out is in place (data/<dataset>.manifest.json)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("verify", help="verify a dataset, write its report and the training mean image")
    s.add_argument("--dataset", required=True)
    s.add_argument("--spec", type=_json("--spec (config 'dataset.<name>')", "$defs.dataset"), required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--manifest", help="data/<dataset>.manifest.json: check the folder against it first")
    s.add_argument("--report", required=True)
    s.add_argument("--mean-image", required=True)
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("train", help="train one model variant with one seed")
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="a model variant (reid.variants: built-in, plug-in or custom_models)")
    s.add_argument("--custom-model", type=_json("--custom-model (config 'custom_models.<name>')"), default=None,
                   help='JSON {"entry": "package.module:function"}: --model is this custom model (config custom_models)')
    s.add_argument("--reading", default=None,
                   help="a reading of reid.readings (replaces --model: its variant and model keys)")
    s.add_argument("--seed", type=bounded("seeds[]", "--seed"), required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--mean-image", required=True)
    s.add_argument("--model-params", type=_typed(ModelConfig, "--model-params (config 'model')"), required=True)
    s.add_argument("--train-params", type=_typed(TrainConfig, "--train-params (config 'train')"), required=True)
    s.add_argument("--recipe-params", type=_json("--recipe-params (the training recipe's config section)"),
                   default=None, help="JSON: the config section of the model's training recipe (reid.recipes), "
                                      "e.g. config 'bot'; left out: the schema's defaults")
    s.add_argument("--mlflow-params", type=_json("--mlflow-params (config 'mlflow')", "mlflow"), default=None,
                   help="default: experiment prefix from REID_EXPERIMENT_PREFIX, tracking URI from MLFLOW_TRACKING_URI")
    s.add_argument("--tracking", choices=TRACKERS, default=None,
                   help="where the run is recorded: mlflow, or none (nothing recorded, no store needed); "
                        "default: $REID_TRACKING, else mlflow")
    s.add_argument("--workers", type=bounded("train.workers", "--workers"), default=None, help="train.workers (overrides --train-params)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="train.device (overrides --train-params)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--checkpoint-dir", required=True)
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("extract", help="embed query, gallery and gt_bbox images")
    s.add_argument("--model-file", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--mean-image", required=True)
    s.add_argument("--batch-size", type=bounded("evaluate.batch_size", "--batch-size"), default=128)
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=1)
    s.add_argument("--flip", action="store_true", help="flip test: add each image's mirror image's embedding")
    s.add_argument("--test-embedding", default=None, choices=["single", "mutual_self", "plain"],
                   help="embed with this single-image path instead of the trained one (same weights)")
    s.add_argument("--feature-norm", default="l2", choices=["l2", "none"],
                   help="l2: unit-length features (default); none: as the model gives them (config evaluate.feature_norm)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("evaluate", help="CMC/mAP, multi-query and re-ranking -> metrics.json")
    s.add_argument("--features", required=True)
    s.add_argument("--run-info", default=None,
                   help="run.json of the training run (written by `reid train`): the provenance metrics.json "
                        "records, and the run a tracker links the evaluation to; without it the provenance "
                        "comes from features.pt and the evaluation is not tracked")
    s.add_argument("--tracking", choices=TRACKERS, default=None,
                   help="where the evaluation is recorded (with --run-info): mlflow or none; default: "
                        "$REID_TRACKING, else mlflow")
    s.add_argument("--max-rank", type=bounded("evaluate.max_rank", "--max-rank"), default=50)
    s.add_argument("--rerank", type=_typed(RerankConfig, "--rerank (config 'evaluate.rerank')"), required=True)
    s.add_argument("--memory-gb", type=bounded("evaluate.memory_gb", "--memory-gb"), default=None,
                   help="working memory (GiB) beyond the features, default 2; queries are ranked in blocks "
                        "that fit (config 'evaluate.memory_gb'; the numbers do not depend on it)")
    s.add_argument("--bootstrap", type=_typed(BootstrapConfig, "--bootstrap (config 'evaluate.bootstrap')"),
                   required=True, help='JSON {"resamples": N, "seed": S}: the identity bootstrap behind metrics.json ci95')
    s.add_argument("--test-dataset", default=None,
                   help="cross-domain evaluation: the dataset the features' query and gallery come from, when "
                        "it is not the one the model was trained on (metrics.json 'dataset' names it, "
                        "'train_dataset' the training set; MLflow: a run tagged test_dataset)")
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=1)
    s.add_argument("--out", required=True, help="metrics.json")
    s.add_argument("--per-query-out", required=True, help="per_query.csv: one row per (protocol, query)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("evaluate-features",
                       help="evaluate features made by any tool (.npz, .pt, layumi .mat) -> DIR/metrics.json, per_query.csv",
                       description="Evaluate features made by any tool with the pipeline's protocol (single query, "
                                   "re-ranking, multi-query when given, both AP conventions, mINP, identity-bootstrap "
                                   "intervals). The file's keys are listed in reid/external.py and the README.")
    s.add_argument("features_file", metavar="FILE")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.json and per_query.csv")
    s.add_argument("--max-rank", type=bounded("evaluate.max_rank", "--max-rank"), default=50)
    s.add_argument("--rerank", type=_typed(RerankConfig, "--rerank (config 'evaluate.rerank')"), default="{}",
                   help='JSON {"k1": 20, "k2": 6, "lambda": 0.3}; missing keys take the config defaults')
    s.add_argument("--bootstrap", type=_typed(BootstrapConfig, "--bootstrap (config 'evaluate.bootstrap')"),
                   default="{}", help='JSON {"resamples": 10000, "seed": 0}; missing keys take the config defaults')
    s.add_argument("--memory-gb", type=bounded("evaluate.memory_gb", "--memory-gb"), default=None,
                   help="working memory (GiB) beyond the features, default 2 (the numbers do not depend on it)")
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=2)
    s.set_defaults(func=cmd_evaluate_features)

    s = sub.add_parser("rank", help="rank a folder of gallery images for one query image (paper Fig. 5, any image)")
    s.add_argument("--model-file", required=True, help="model.pt written by `reid train`")
    s.add_argument("--query", required=True, help="the query image")
    s.add_argument("--gallery", required=True, help="a folder of images (searched recursively)")
    s.add_argument("--mean-image", default=None,
                   help="the training mean image (default: results/<dataset>/mean_image.pt beside the model's run)")
    s.add_argument("--top", type=bounded("evaluate.max_rank", "--top"), default=10,
                   help="how many gallery images to list (bounds of config evaluate.max_rank)")
    s.add_argument("--flip", action="store_true", help="flip test, as evaluate.flip")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=2)
    s.add_argument("--out", default=None, help="PNG of the query and its top matches")
    s.set_defaults(func=cmd_rank)

    s = sub.add_parser("export", help="a trained model's test path as an ONNX graph, parity-checked in ONNX Runtime")
    s.add_argument("--model-file", required=True, help="model.pt written by `reid train`")
    s.add_argument("--format", choices=["onnx"], default="onnx")
    s.add_argument("--out", required=True, help="the ONNX file (written only if the parity check passes)")
    s.add_argument("--data", default=None, help="dataset folder whose test images the parity check embeds "
                                                "(default: data/<dataset> beside the model's results/)")
    s.add_argument("--mean-image", default=None,
                   help="the training mean image (default: results/<dataset>/mean_image.pt beside the model's run)")
    s.add_argument("--images", type=bounded("$defs.parity_images", "--images"), default=32,
                   help="test images in the parity check (1-1024)")
    s.add_argument("--test-embedding", default=None, choices=["single", "mutual_self", "plain"],
                   help="export this single-image path instead of the trained one (mutual models; same weights)")
    s.add_argument("--threads", type=bounded("$defs.threads", "--threads"), default=2)
    s.add_argument("--tracking", choices=TRACKERS, default=None,
                   help="where the file is recorded with the training run: mlflow or none; default: "
                        "$REID_TRACKING, else mlflow")
    s.set_defaults(func=cmd_export)

    from reid.report.cli import add_report_commands

    add_report_commands(sub)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from reid import plugins

    try:
        # the plug-ins and custom models the Snakefile loaded (config plugins:, custom_models:)
        plugins.load_from_environment()
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, OSError, ImportError) as e:
        # expected failures (bad input, missing files): the message names the file or key at fault
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
