"""docs/extending.md's worked example through `snakemake`, as a user runs it: a custom model
(`custom_models:`), a model variant and a dataset kind registered by a module outside `reid/`
(`plugins:`), on a tiny dataset in the kind's own layout, through prepare -> verify -> train ->
extract -> evaluate -> comparisons -> tables and figures, and into MLflow."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow  # one Snakemake run of 14 small jobs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent

CONFIG = {
    "plugins": ["reid_example_plugin"],
    "custom_models": {"tiny_net": {"entry": "reid_example_plugin:build_tiny_net", "label": "tiny CNN + verifier"}},
    "models": ["tiny_net", "tiny_ide"],
    "datasets": ["flat"],
    "dataset": {"flat": {"source": "archive", "archive": "flat.zip", "kind": "flat_list", "custom": True}},
    "model": {"embedding_dim": 16},
    "train": {"height": 32, "width": 16, "epochs": 2, "batch_pairs": 8, "lr_step": 1},
    "evaluate": {"batch_size": 64, "max_rank": 10, "bootstrap": {"resamples": 200}},  # a gallery of < 50 images
    "report": {"table1_datasets": None, "table2_dataset": "flat", "table3_dataset": None},
}
TARGETS = ["results/tables/table2.md", "results/figures/losses_flat.png", "results/figures/cmc_flat.png"]


def flat_list_archive(path: Path, synthetic_root: Path) -> int:
    """The tiny synthetic dataset re-exported in the `flat_list` kind's own layout (images/ + split.csv)."""
    from reid.data.market import scan_dataset

    rows = []
    with zipfile.ZipFile(path, "w") as z:
        for split, records in scan_dataset(synthetic_root).items():
            if split == "multi_query":  # the export has no gt_bbox images
                continue
            for i, r in enumerate(r for r in records if r.pid > 0):  # persons only: the list has no junk
                name = f"{split}_{i:04d}.jpg"
                z.write(r.path, f"export/images/{name}")
                rows.append(f"{name},{split},{r.pid},{r.camid}")
        z.writestr("export/split.csv", "file,split,person,camera\n" + "\n".join(rows) + "\n")
    return len(rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_SYNTHETIC

    from reid.data.synthetic import synthesize

    work = tmp_path_factory.mktemp("extending")
    synthesize(work / "native", **{**TINY_SYNTHETIC, "distractors": 0, "junk": 0})
    (work / "resources").mkdir()
    listed = flat_list_archive(work / "resources" / "flat.zip", work / "native")
    (work / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'results' / 'mlflow.db'}"}
    env.pop("REID_PLUGINS", None)
    proc = subprocess.run([str(BIN / "snakemake"), *TARGETS, "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(work), "--cores", "2", "--configfile", str(work / "tiny.yaml")],
                          capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return work, env, listed


def test_the_plugin_kind_lays_out_and_verifies_its_own_layout(run):
    work, _, listed = run
    source = json.loads((work / "data/flat.manifest.json").read_text())["source"]
    assert source["kind"] == "flat_list" and source["listed"] == listed and source["dataset_folder"] == "export"
    report = json.loads((work / "results/flat/dataset.json").read_text())
    assert report["ok"] and report["kind"] == "flat_list"
    assert sum(report["splits"][s]["images"] for s in ("train", "query", "gallery")) == listed
    names = (work / "data/flat/original_names.tsv").read_text().splitlines()
    assert len(names) == listed + 1 and names[1].split("\t")[2].startswith("images/")


def test_both_models_train_with_the_pipeline_losses_and_are_rebuilt_from_their_builder(run):
    work, _, _ = run
    for model, verifier in (("tiny_net", True), ("tiny_ide", False)):
        blob = torch.load(work / f"results/flat/{model}/seed0/model.pt", weights_only=True)
        builder = blob["meta"]["builder"]
        assert builder["entry"] == {"tiny_net": "reid_example_plugin:build_tiny_net",
                                    "tiny_ide": "reid_example_plugin:build_tiny_ide"}[model]
        assert builder["config"]["model"]["embedding_dim"] == 16 and "model_kwargs" not in blob["meta"]
        with open(work / f"results/flat/{model}/seed0/history.csv", newline="") as f:
            history = list(csv.DictReader(f))
        assert len(history) == 2
        # the verification loss is trained exactly when the model returns verif_logits
        assert (float(history[0]["loss_verif"]) > 0) == verifier
        feats = torch.load(work / f"results/flat/{model}/seed0/features.pt", weights_only=True)
        assert feats["query_feats"].shape[1] == 16 and feats["meta"]["flip"] == "true"
        assert torch.allclose(feats["query_feats"].norm(dim=1), torch.ones(len(feats["query_feats"])))


def test_metrics_tables_and_figures_show_both_models(run):
    work, _, _ = run
    for model in ("tiny_net", "tiny_ide"):
        m = json.loads((work / f"results/flat/{model}/seed0/metrics.json").read_text())
        assert m["model"] == model and m["dataset"] == "flat" and 0 <= m["mAP"] <= m["rank20"] <= 1
    table = (work / "results/tables/table2.md").read_text()
    # the registry's order: built-ins, then what plugins: register, then custom_models:
    rows = [line for line in table.splitlines() if line.startswith("| tiny") and "reproduced here" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["tiny CNN, identification only", "tiny CNN + verifier"]
    assert re.search(r"\| tiny CNN \+ verifier\s+\| reproduced here \(flat\)", table)
    assert "| tiny IDE | tiny CNN + verifier | single query | mAP" in table  # short labels, paired section
    comparisons = json.loads((work / "results/flat/comparisons.json").read_text())
    assert [(p["a"], p["b"]) for p in comparisons["pairs"]] == [("tiny_ide", "tiny_net")]
    assert (work / "results/figures/losses_flat.png").stat().st_size > 10_000
    assert (work / "results/figures/cmc_flat.png").stat().st_size > 10_000


def test_mlflow_holds_the_custom_models_like_the_builtins(run):
    from mlflow.tracking import MlflowClient

    work, env, _ = run
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("reid-flat")
    models = {m.name: m for m in client.search_logged_models(experiment_ids=[exp.experiment_id])}
    assert sorted(models) == ["tiny_ide-seed0", "tiny_net-seed0"]
    assert models["tiny_net-seed0"].params["builder"] == "reid_example_plugin:build_tiny_net"
    assert {"rank1", "mAP"} <= {x.key for x in models["tiny_net-seed0"].metrics}
    # the LoggedModel carries the plug-in's source beside reid/, so it loads without this checkout's path
    code = Path(models["tiny_net-seed0"].artifact_location.removeprefix("file://")) / "code"
    assert (code / "reid_example_plugin.py").is_file() and (code / "reid").is_dir()


def test_a_builder_that_returns_the_wrong_thing_stops_training_naming_it(run, tmp_path):
    work, env, _ = run
    (tmp_path / "broken_model.py").write_text(
        "from reid_example_plugin import TinyNet\n"
        "class NoPairs(TinyNet):\n"
        "    def forward(self, x1, x2):\n"
        "        return self.classifier(self.embed(x1))\n"
        "def build(num_classes, config):\n"
        "    return NoPairs(num_classes, 8)\n")
    cmd = [sys.executable, "-m", "reid", "train", "--dataset", "flat", "--model", "broken", "--seed", "0",
           "--custom-model", '{"entry": "broken_model:build"}', "--data", str(work / "data/flat"),
           "--mean-image", str(work / "results/flat/mean_image.pt"),
           "--model-params", json.dumps(CONFIG["model"]), "--train-params", json.dumps(CONFIG["train"]),
           "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{tmp_path}"}, timeout=300)
    assert proc.returncode != 0
    assert "broken_model:build: forward(x1, x2) returned Tensor, expected a dict" in proc.stderr
    assert not (tmp_path / "out" / "model.pt").exists()
