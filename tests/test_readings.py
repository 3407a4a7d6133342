"""The readings of the paper: the one definition (reid/readings.py), the presets that pin them, the ablation table."""

import copy
import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from reid import readings as R
from reid.config_checks import validate

ROOT = Path(__file__).resolve().parent.parent


def merged(*presets):
    """config.yaml with presets merged over it, section by section (as Snakemake's --configfile does)."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for preset in presets:
        for k, v in yaml.safe_load((ROOT / "presets" / preset).read_text()).items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    return validate(cfg)


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_every_test_embedding_is_one_the_model_builds():
    from reid.models import ReIDModel

    for reading in R.READINGS:
        assert set(reading.embeddings) <= set(R.TEST_EMBEDDINGS)
    for embedding in R.TEST_EMBEDDINGS:
        path = "pair" if embedding == "mutual_self" else "single"
        ReIDModel("mutual", 3, backbone="resnet18", embedding_dim=8, test_embedding=embedding, identification_path=path)
    with pytest.raises(ValueError, match="model.test_embedding 'bogus' is unknown"):
        ReIDModel("mutual", 3, backbone="resnet18", embedding_dim=8, test_embedding="bogus")
    assert R.identification_path_conflict("pair", "single") and not R.identification_path_conflict("single", "single")


def test_every_reading_builds_a_valid_config_and_model():
    from reid.models import build_model

    cfg = merged()
    names = [r.name for r in R.READINGS]
    assert names[:5] == ["ide", "baseline", "self_attention", "mutual", "mutual_pair"]
    assert len(set(names)) == len(names)
    for reading in R.READINGS:
        model_cfg = reading.model_config(cfg["model"])
        assert model_cfg is not cfg["model"]
        checked = copy.deepcopy(cfg)
        checked["model"], checked["models"] = model_cfg, [reading.variant]
        checked["train"] = reading.train_config(cfg["train"])
        checked["evaluate"] = reading.extract_config(cfg["evaluate"])
        validate(checked)  # the config check, e.g. pair needs mutual_self; every override a valid value
        assert reading.reference in names and R.reading(reading.reference).trains
        if not reading.trains:  # it evaluates another reading's model: nothing of its own to train with
            assert R.reading(reading.model_of).trains and R.reading(reading.model_of).variant == reading.variant
            assert not reading.model_overrides and not reading.train_overrides
        kwargs = {k: model_cfg[k] for k in ("backbone", "embedding_dim", "dropout", "attention_layers",
                                            "test_embedding", "attention_norm", "attention_init",
                                            "identification_path", "verification_norm", "embedding_norm",
                                            "verification_feature", "verification_head", "attention_channels")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(reading.variant, 3, **kwargs)
        for embedding in reading.embeddings:  # extraction with each test embedding is allowed
            model.set_test_embedding(embedding)
    mutual, pair = R.reading("mutual"), R.reading("mutual_pair")
    assert (mutual.model_config(cfg["model"])["identification_path"], mutual.trained_embedding) == ("single", "single")
    assert (pair.model_config(cfg["model"])["identification_path"], pair.trained_embedding) == ("pair", "mutual_self")
    with pytest.raises(ValueError, match="unknown; choose one of ide, baseline"):
        R.reading("mutal")


def test_paper_preset_pins_every_reading_key_with_a_comment():
    text = (ROOT / "presets" / "paper.yaml").read_text()
    pinned = flat(yaml.safe_load(text))
    for key in R.READING_KEYS:
        assert key in pinned, f"presets/paper.yaml does not pin {key}"
        leaf = key.split(".")[-1]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{leaf}:"))
        assert "#" in line and ("paper" in line or "ours" in line), f"{key}: no 'paper'/'ours' comment"


def test_literal_preset_differs_only_where_the_paper_speaks():
    paper = flat(yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text()))
    literal = flat(yaml.safe_load((ROOT / "presets" / "paper-literal.yaml").read_text()))
    assert paper.keys() == literal.keys()
    differ = {k: (paper[k], literal[k]) for k in paper if paper[k] != literal[k]}
    assert differ == {"model.attention_norm": ("rms", "none"), "model.verification_norm": ("batchnorm", "none"),
                      "model.test_embedding": ("single", "plain"),
                      "model.verification_feature": ("squared", "absolute"),
                      "model.verification_head": ("linear", "sequential"),
                      "train.lr_decay": ("step", "gradual"), "train.input_norm": ("mean_std", "mean"),
                      "train.mean_image_size": ("stored", "input"), "train.positive_pairs": ("cross_camera", "random"),
                      "evaluate.feature_norm": ("l2", "none"), "train.precision": ("bf16", "fp32")}
    # each difference is the paper's reading: the literal preset's comment on it says "paper"
    text = (ROOT / "presets" / "paper-literal.yaml").read_text()
    for key in differ:
        if key == "train.precision":  # the paper is silent: fp32, the plain reading, is not a quote
            continue
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(key.split(".")[-1] + ":"))
        assert "# paper, " in line, f"presets/paper-literal.yaml: {key} departs from presets/paper.yaml without a quote"
    for preset in ("paper.yaml", "paper-literal.yaml"):
        assert merged(preset)["model"]["backbone"] == "resnet50"


# ---------------------------------------------------------------- the table, from hand-made files

# Rank-1 hits out of 10 queries (5 identities, 2 queries each) per reading, per test embedding in order
HITS = {"ide": [4], "baseline": [6], "self_attention": [5], "mutual": [5, 6, 4], "mutual_pair": [7, 6, 5],
        "baseline_mean_only": [5], "baseline_input_mean": [6], "baseline_gradual_lr": [7],
        "baseline_random_pairs": [6], "baseline_no_embedding_bn": [3], "baseline_absolute_fd": [6],
        "baseline_sequential_verifier": [6], "baseline_raw_features": [4], "mutual_shared_maps": [7]}
SECONDS = {"ide": 8.0, "baseline": 10.0, "self_attention": 11.0, "mutual": 14.0, "mutual_pair": 10.5,
           "baseline_mean_only": 10.0, "baseline_input_mean": 10.0, "baseline_gradual_lr": 10.0,
           "baseline_random_pairs": 10.0, "baseline_no_embedding_bn": 9.0, "baseline_absolute_fd": 10.0,
           "baseline_sequential_verifier": 10.0, "mutual_shared_maps": 14.0}


def per_query(hits: int):
    """10 queries: the first `hits` find their match at rank 1, the others at rank 3 (AP 1/3)."""
    from reid.metrics import uncertainty as U

    fmr = [1] * hits + [3] * (10 - hits)
    ap = [1.0 / r for r in fmr]
    return U.per_query_table({"single": {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap, "inp": ap}},
                             [f"query/{i:04d}.jpg" for i in range(10)], [i // 2 + 1 for i in range(10)], [1] * 10)


def write_runs(results: Path, dataset="tiny", seed=0):
    from reid.metrics import uncertainty as U

    kwargs = dict(backbone="resnet18", embedding_dim=16, dropout=0.0, attention_layers=[3, 4],
                  attention_norm="rms", attention_init="zero", verification_norm="batchnorm")
    for reading in R.READINGS:
        folder = results / dataset / "readings" / reading.name / f"seed{seed}"
        folder.mkdir(parents=True)
        for embedding, hits in zip(reading.embeddings, HITS[reading.name], strict=True):
            (folder / embedding).mkdir()
            table = per_query(hits)
            (folder / embedding / "per_query.csv").write_text(U.per_query_csv(table))
            record = {"dataset": dataset, "model": reading.variant, "seed": seed,
                      "mlflow_run_id": f"run-{reading.name}", "flip_test": False, **U.estimates(table)}
            (folder / embedding / "metrics.json").write_text(json.dumps(record))
        if not reading.trains:  # it evaluates model_of's model: no training files of its own
            continue
        over = {"test_embedding": "single", "identification_path": "single", **reading.model_overrides}
        meta = {"model_kwargs": {"variant": reading.variant, "num_classes": 5, **kwargs, **over},
                "height": 32, "width": 16}
        torch.save({"state_dict": {}, "meta": meta}, folder / "model.pt")
        with open(folder / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "images_per_s", "seconds"])
            w.writeheader()
            for epoch in (1, 2):  # 1000 images an epoch
                w.writerow({"epoch": epoch, "images_per_s": 1000 / SECONDS[reading.name],
                            "seconds": SECONDS[reading.name]})


def test_readings_table_rows_differences_flops_and_time(tmp_path):
    from reid.report.paper import describe_dataset
    from reid.report.readings import readings_table

    write_runs(tmp_path)
    doc = readings_table(tmp_path, "tiny", [0], describe_dataset("tiny", {"source": "synthetic"}))
    df = doc.table
    assert len(df) == len(R.entries()) == 18
    assert list(df["Test embedding"][3:6]) == ["single (trained)", "mutual_self", "plain"]
    assert list(df["Test embedding"][6:9]) == ["mutual_self (trained)", "single", "plain"]
    rows = {(r.split("`")[1], e.split(" ")[0]): i for i, (r, e) in enumerate(zip(df["Reading"], df["Test embedding"]))}
    base = rows[("baseline", "–")]
    assert df["Δ Rank-1 vs reference (pp)"][base] == "(reference)"
    assert df["Rank-1 (%)"][rows[("mutual", "plain")]].startswith("40.00 [")  # 4 of 10
    assert df["Δ Rank-1 vs reference (pp)"][rows[("mutual", "plain")]].startswith("−20.00 [")
    # mAP: (7 x 1 + 3 x 1/3) / 10 = 0.8 against (6 + 4/3) / 10 = 0.7333
    assert df["Δ mAP vs reference (pp)"][rows[("mutual_pair", "mutual_self")]].startswith("+6.67 [")
    # one hit more than the baseline (6 vs 7, 10 queries): the interval holds 0
    assert df["Δ Rank-1 vs reference (pp)"][rows[("mutual_pair", "mutual_self")]].endswith("n.s.")
    assert df["p (Rank-1 / mAP)"][rows[("mutual", "plain")]].count("/") == 1
    assert df["time / image (× baseline)"][rows[("mutual", "single")]] == "1.40"
    assert df["time / image (× baseline)"][rows[("ide", "–")]] == "0.80"
    # a reading one key away from mutual is compared with mutual; one reusing the baseline's model
    # shares its training (time, FLOPs)
    shared = rows[("mutual_shared_maps", "single")]
    assert df["Reference"][shared] == "`mutual`" and df["Δ Rank-1 vs reference (pp)"][shared].startswith("+20.00 [")
    raw = rows[("baseline_raw_features", "–")]
    assert df["Reference"][raw] == "`baseline`" and df["Δ Rank-1 vs reference (pp)"][raw].startswith("−20.00 [")
    assert df["time / image (× baseline)"][raw] == "1.00"
    assert df["time / image (× baseline)"][rows[("baseline_no_embedding_bn", "–")]] == "0.90"
    flops = {k: float(df["FLOPs / step (× baseline)"][i]) for k, i in rows.items()}
    assert flops[("baseline_raw_features", "–")] == 1.0
    assert flops[("baseline", "–")] == 1.0
    assert flops[("mutual", "single")] > 1.15 and flops[("mutual_pair", "mutual_self")] < 1.1  # at 32 x 16
    assert flops[("ide", "–")] <= 1.0  # no verification head (a 16 x 2 layer: invisible at 3 decimals)
    md = doc.to_markdown()
    assert "Readings of the paper" in md and "run-mutual_pair" in md


def test_readings_table_names_a_missing_file(tmp_path):
    from reid.report.paper import describe_dataset
    from reid.report.readings import readings_table
    from reid.report.runs import ReportInputError

    write_runs(tmp_path)
    missing = tmp_path / "tiny" / "readings" / "mutual" / "seed0" / "plain" / "metrics.json"
    missing.unlink()
    with pytest.raises(ReportInputError, match="mutual/seed0/plain/metrics.json"):
        readings_table(tmp_path, "tiny", [0], describe_dataset("tiny", {"source": "synthetic"}))


def test_readings_table_refuses_a_stale_per_query_file(tmp_path):
    from reid.report.paper import describe_dataset
    from reid.report.readings import readings_table
    from reid.report.runs import ReportInputError

    write_runs(tmp_path)
    path = tmp_path / "tiny" / "readings" / "baseline" / "seed0" / "single" / "metrics.json"
    record = json.loads(path.read_text())
    record["rank1"] = 0.9
    path.write_text(json.dumps(record))
    with pytest.raises(ReportInputError, match="rerun the evaluation"):
        readings_table(tmp_path, "tiny", [0], describe_dataset("tiny", {"source": "synthetic"}))


def test_reading_runs_are_not_retries_of_the_main_runs_or_of_each_other(mlflow_store, tmp_path):
    """mutual and mutual_pair share variant, dataset and seed: their runs must not count as attempts of one run."""
    from mlflow.tracking import MlflowClient

    from reid import tracking

    client = MlflowClient(mlflow_store)
    store = tracking.MlflowStore(mlflow_store)
    base = {"dataset": "tiny", "model": "mutual", "seed": 0}
    keys = ("dataset", "model", "seed", "rule", "reading")  # as reid.train.train passes them to the tracker
    main = store.start_run("reid-tiny", "mutual-seed0-train", {}, {**base, "rule": "train"}, key_tags=keys)
    single = store.start_run("reid-tiny", "mutual-seed0-train", {},
                                {**base, "rule": "train_reading", "reading": "mutual"}, key_tags=keys)
    pair = store.start_run("reid-tiny", "mutual_pair-seed0-train", {},
                              {**base, "rule": "train_reading", "reading": "mutual_pair"}, key_tags=keys)
    test = {"name": "tiny/test", "digest": "0123abcd", "source": str(tmp_path)}
    settings = {"flip": False, "max_rank": 50, "test_embedding": "single"}
    evals = {}
    for run_id in (main, single, pair):
        store.finish_run(run_id)
        evals[run_id] = store.log_evaluation(run_id, {"rank1": 0.5, "mAP": 0.4}, settings, test_data=test)
    for run_id in (main, single, pair, *evals.values()):
        run = client.get_run(run_id)
        assert run.info.run_name.endswith("-try1") and "retry_of" not in run.data.tags, run.info.run_name
    tags = client.get_run(evals[pair]).data.tags
    assert (tags["reading"], tags["rule"]) == ("mutual_pair", "evaluate_reading")
    assert client.get_run(evals[pair]).info.run_name.startswith("mutual_pair-seed0-eval-")
    assert client.get_run(evals[main]).data.tags["rule"] == "evaluate"


def test_reid_train_applies_a_readings_train_keys_and_refuses_one_without_training(monkeypatch, tmp_path, capsys):
    import reid.train
    from reid.cli import main

    seen = {}
    monkeypatch.setattr(reid.train, "train", lambda **kw: seen.update(kw) or [])
    argv = ["train", "--dataset", "d", "--seed", "0", "--data", "nowhere", "--mean-image", "m.pt",
            "--model-params", "{}", "--train-params", '{"epochs": 2, "lr_decay_epochs": 3}', "--mlflow-params", "{}",
            "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    main(argv + ["--reading", "baseline_gradual_lr"])
    assert seen["variant"] == "baseline" and seen["reading"] == "baseline_gradual_lr"
    assert (seen["train_cfg"].lr_decay, seen["train_cfg"].lr_decay_epochs, seen["train_cfg"].epochs) == ("gradual", 3, 2)
    main(argv + ["--reading", "baseline_no_embedding_bn"])
    assert seen["model_cfg"].embedding_norm == "none" and seen["train_cfg"].lr_decay == "step"
    seen.clear()
    assert main(argv + ["--reading", "baseline_raw_features"]) == 1  # a ConfigError: exit status 1, nothing trained
    assert not seen and "evaluates the model of 'baseline'" in capsys.readouterr().err
    # the paper's recipe has no section of its own: a bot: section for one of its readings is refused
    # (the bot readings' own commands run through the CLI in the test below)
    assert main(argv + ["--recipe-params", '{"epochs": 4}', "--reading", "baseline"]) == 1
    assert not seen and "has no config section of its own" in capsys.readouterr().err


def test_seconds_per_image_reads_history_through_its_loader(tmp_path):
    from reid.report.readings import seconds_per_image
    from reid.report.runs import ReportInputError

    path = tmp_path / "history.csv"
    path.write_text("epoch,lr,loss_total,images_per_s,seconds\n1,0.1,2.0,100,2\n2,0.1,1.0,50,4\n")
    assert seconds_per_image(path) == pytest.approx(6 / (100 * 2 + 50 * 4))
    path.write_text("epoch,seconds\n1,2\n")
    with pytest.raises(ReportInputError, match=r"history.csv: missing column\(s\) images_per_s\..*rule `train`"):
        seconds_per_image(path)
    with pytest.raises(ReportInputError, match=r"nothing.csv: training history not found .*rule `train`"):
        seconds_per_image(tmp_path / "nothing.csv")


def dry_run_trainings(work: Path, target: str) -> tuple[list[list[str]], str]:
    """The `reid train` commands (as argument lists) a dry run of ``target`` plans, and its output."""
    import os
    import re
    import shlex
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(bin_dir / "snakemake"), "-n", "-p", target, "--configfile", str(ROOT / "config.yaml"),
                           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work)],
                          capture_output=True, text=True, env=env, cwd=work, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [shlex.split(c.split(" > ")[0]) for c in re.findall(r"python -m reid train .*", proc.stdout)]
    return commands, proc.stdout


def test_every_reading_trains_with_the_configured_sections_and_its_own_keys(tmp_path, monkeypatch):
    """Through the workflow as a user runs it: each planned `reid train --reading` command, run by the
    CLI, trains with config.yaml's model, train and (strong baseline) bot sections with exactly the
    reading's overrides over them. A key that the overrides make meaningful keeps its configured value
    (train.lr_decay_epochs 5 for baseline_gradual_lr, not the schema's 20)."""
    import reid.train
    from reid.cli import main
    from reid.config import result_keys
    from reid.typed_config import BotConfig, ModelConfig, TrainConfig

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    seen = {}
    monkeypatch.setattr(reid.train, "train", lambda **kw: seen.update(kw) or [])
    for ablation, target in (("paper", "results/tables/readings.md"), ("bot", "results/tables/readings_bot.md")):
        commands, out = dry_run_trainings(tmp_path, target)
        readings = R.ablation(ablation).readings
        assert sorted(c[c.index("--reading") + 1] for c in commands) == sorted(r.name for r in readings if r.trains)
        assert ("--ablation bot" in out) == (ablation == "bot")
        for command in commands:
            chosen = R.reading(command[command.index("--reading") + 1])
            assert ("--recipe-params" in command) == (ablation == "bot")  # the paper's readings pass no bot: section
            seen.clear()
            assert main(command[3:] + ["--mlflow-params", json.dumps({"enabled": False})]) in (0, None)
            assert seen["variant"] == chosen.variant and seen["reading"] == chosen.name
            # compared as result keys: a key the run does not use (lr_decay_epochs under step) may differ
            for name, want in (("model", chosen.model_config(cfg["model"])), ("train", chosen.train_config(cfg["train"]))):
                got = seen[f"{name}_cfg"].as_dict()
                want = (ModelConfig if name == "model" else TrainConfig).from_dict(want).as_dict()
                assert result_keys(got, name) == result_keys(want, name), (chosen.name, name)
            if ablation == "bot":
                bot = BotConfig.from_dict(cfg["bot"]).as_dict()  # the schema completes the demo's section
                assert seen["recipe_cfg"] == BotConfig.from_dict(chosen.recipe_config("bot", bot)), chosen.name
    gradual = R.reading("baseline_gradual_lr").train_config(cfg["train"])
    assert (gradual["lr_decay"], gradual["lr_decay_epochs"]) == ("gradual", 5)
