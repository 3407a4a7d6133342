"""Issue 24: `reid export` writes a model's test path as ONNX, checked against PyTorch in ONNX Runtime.

Expected embeddings come from the code paths a user gets them from today: `reid extract`'s
(reid.features.embed_records, no flip) and the MLflow LoggedModel's (EmbeddingNet, loaded back from
the store); ONNX Runtime runs the written file.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid import export_onnx, tracking
from reid.cli import main
from reid.data.market import scan_dataset
from reid.data.transforms import load_eval_transform
from reid.features import embed_records
from reid.models import build_model
from reid.models.custom import CustomModelError
from reid.models.export import EmbeddingNet

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEIGHT, WIDTH = 64, 32
TOL = export_onnx.PARITY_TOLERANCE


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no section '{title}'"
    return m.group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as the quick start leaves it, at toy size: data/synthetic/, results/synthetic/
    mean_image.pt, and a mutual model trained one epoch with MLflow (model.pt, run.json, LoggedModel)."""
    from conftest import TINY_SYNTHETIC

    from reid.data.market import TRAIN_DIR, scan_split
    from reid.data.synthetic import synthesize
    from reid.data.transforms import compute_mean_image
    from reid.files.mean_image import write_mean_image
    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    root = tmp_path_factory.mktemp("project")
    data, results = root / "data" / "synthetic", root / "results" / "synthetic"
    synthesize(data, **TINY_SYNTHETIC)
    mean = results / "mean_image.pt"
    write_mean_image(compute_mean_image([r.path for r in scan_split(data / TRAIN_DIR)]), mean)
    run_dir = results / "mutual" / "seed0"
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.init_store(uri, ["reid-synthetic"])
        train(data_root=data, mean_image=mean, dataset="synthetic", variant="mutual", seed=0,
              model_cfg=ModelConfig.from_dict({"backbone": "resnet18", "embedding_dim": 16, "attention_init": "kaiming"}),
              train_cfg=TrainConfig.from_dict({"height": HEIGHT, "width": WIDTH, "epochs": 1, "batch_pairs": 4,
                                               "device": "cpu"}),
              tracker=tracking.MlflowTracker("reid"),
              outputs=TrainOutputs(run_dir / "model.pt", run_dir / "history.csv", run_dir / "run.json"),
              checkpoint_dir=root / "checkpoints")
    return {"root": root, "data": data, "mean": mean, "model": run_dir / "model.pt", "uri": uri,
            "run": json.loads((run_dir / "run.json").read_text())}


@pytest.fixture(scope="module")
def real_images(project):
    """(records, preprocessed (N, 3, HEIGHT, WIDTH) test images) of the tiny dataset."""
    splits = scan_dataset(project["data"])
    records = (splits["query"] + splits["gallery"])[:7]
    transform = load_eval_transform(project["mean"], HEIGHT, WIDTH)
    return records, torch.stack([transform(r.path) for r in records])


def _extract_path(model, images: torch.Tensor) -> torch.Tensor:
    """What `reid extract` computes (no flip test, fp32; channels-last model and input), on preprocessed images."""
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    records = [_Record(i) for i in range(len(images))]
    return embed_records(model, records, lambda i: images[i], 3, torch.device("cpu"))


class _Record:  # embed_records reads .path only, and hands it to the transform
    def __init__(self, path):
        self.path = path


def test_readme_deploy_section_exports_and_its_snippet_reproduces_extract_and_the_logged_model(project, monkeypatch):
    section = _readme_section("Deploy a trained model")
    command = re.findall(r"```bash\n(.*?)```", section, re.S)[0].strip()
    assert command.startswith("./venv-run reid export --model-file results/synthetic/mutual/seed0/model.pt")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "MLFLOW_TRACKING_URI": project["uri"], "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command.replace("./venv-run ", "").replace("\\\n", " "), shell=True, cwd=project["root"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = project["root"] / "mutual.onnx"
    assert "wrote mutual.onnx: ONNX opset 17" in proc.stdout and "parity on" in proc.stdout
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert set(export_onnx.METADATA_KEYS) <= set(meta)
    assert (meta["dataset"], meta["variant"], meta["seed"], meta["height"], meta["width"], meta["embedding_dim"]) == \
        ("synthetic", "mutual", "0", str(HEIGHT), str(WIDTH), "16")
    assert float(meta["parity_max_abs_diff"]) <= TOL and int(meta["parity_images"]) == 32
    assert [o.version for o in onnx.load(out).opset_import if o.domain in ("", "ai.onnx")] == [17]

    # the snippet, as a deployer runs it: numpy, PIL, onnx and onnxruntime only
    snippet = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert "import reid" not in snippet and "from reid" not in snippet
    monkeypatch.chdir(project["root"])
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    paths, emb = scope["paths"], scope["embeddings"]
    assert emb.shape == (len(paths), 16) and len(paths) >= 2

    from reid.models.runtime import load_trained_model

    model, _ = load_trained_model(project["model"])
    transform = load_eval_transform(project["mean"], HEIGHT, WIDTH)
    images = torch.stack([transform(p) for p in paths])
    np.testing.assert_allclose(emb, _extract_path(model, images).numpy(), rtol=0, atol=TOL)

    import mlflow.pytorch

    mlflow.set_tracking_uri(project["uri"])
    logged = mlflow.pytorch.load_model(f"models:/{project['run']['logged_model_id']}")
    with torch.no_grad():
        np.testing.assert_allclose(emb, logged(images).numpy(), rtol=0, atol=TOL)

    # the file went to the training run, and the LoggedModel names it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project["uri"])
    run_id = project["run"]["mlflow_run_id"]
    assert [a.path for a in client.list_artifacts(run_id, "export")] == ["export/mutual.onnx"]
    tags = client.get_logged_model(project["run"]["logged_model_id"]).tags
    assert tags["export.onnx"] == f"runs:/{run_id}/export/mutual.onnx"
    assert "recorded with the training run: export/mutual.onnx" in proc.stdout


VARIANTS = [("ide", {}), ("baseline", {}), ("self_attention", {}),
            ("mutual", {"test_embedding": "single"}), ("mutual", {"test_embedding": "mutual_self"}),
            ("mutual", {"test_embedding": "plain"}),
            ("mutual", {"test_embedding": "mutual_self", "identification_path": "pair"})]


@pytest.mark.parametrize("variant,options", VARIANTS, ids=[f"{v}-{'-'.join(o.values()) or 'single'}"
                                                          for v, o in VARIANTS])
def test_every_builtin_variant_exports_with_parity_on_real_and_random_images(variant, options, real_images):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # kaiming: the attention is not zero, so its maps change the embedding
        model = build_model(variant, 5, backbone="resnet18", embedding_dim=16, attention_init="kaiming",
                            **options).eval()
    _, images = real_images
    graph, worst = export_onnx.export_model(model, images, {"variant": variant}, f"variant {variant}")
    assert 0 <= worst <= TOL
    random = torch.randn(6, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    session = export_onnx.onnx_session(graph)
    for batch in (images[:3], images, random[:1], random):  # real and random, two batch sizes each
        got = export_onnx.run_onnx(session, batch.numpy())
        with torch.no_grad():
            logged_model = EmbeddingNet(model)(batch).numpy()
        np.testing.assert_allclose(got, logged_model, rtol=0, atol=TOL)
        np.testing.assert_allclose(got, _extract_path(model, batch).numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}
    assert meta["opset"] == "17" and meta["embedding_dim"] == "16" and meta["parity_images"] == str(len(images))


@pytest.fixture
def example_plugin(monkeypatch):
    """The worked example's plug-in module, imported in this process; the variants and dataset kinds
    its import registers are removed again afterwards, so that no later test sees them."""
    from reid import variants
    from reid.data import kinds

    saved = [(registry, dict(registry)) for registry in (variants.REGISTRY, kinds.REGISTRY)]
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "extending"))
    monkeypatch.delitem(sys.modules, "reid_example_plugin", raising=False)
    import reid_example_plugin

    yield reid_example_plugin
    for registry, before in saved:
        registry.clear()
        registry.update(before)
    sys.modules.pop("reid_example_plugin", None)


def test_the_worked_example_custom_model_exports(real_images, example_plugin):
    build_tiny_net = example_plugin.build_tiny_net

    torch.manual_seed(0)
    model = build_tiny_net(5, {"model": {"embedding_dim": 8}})
    _, images = real_images
    graph, worst = export_onnx.export_model(model, images, {}, "reid_example_plugin:build_tiny_net")
    assert worst <= TOL
    session = export_onnx.onnx_session(graph)
    for batch in (images[:2], images):
        with torch.no_grad():
            expected = F.normalize(model.eval().embed(batch), dim=1).numpy()
        np.testing.assert_allclose(export_onnx.run_onnx(session, batch.numpy()), expected, rtol=0, atol=TOL)


class _Unexportable(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, stride=4)

    def embed(self, x):
        f = self.conv(x).flatten(1)
        if self.kind == "tuple":
            return f, f
        return torch.cummax(f, dim=1).values  # no ONNX form in torch's exporter


def test_an_operation_onnx_cannot_express_is_named(real_images):
    _, images = real_images
    with pytest.raises(export_onnx.ExportError, match=r"my_models:build: cannot be exported to ONNX: .*'aten::cummax'"):
        export_onnx.export_model(_Unexportable("cummax"), images, {}, "my_models:build")


def test_an_embed_that_returns_a_tuple_is_named(real_images):
    _, images = real_images
    with pytest.raises(CustomModelError, match=r"my_models:build: embed\(x\) returned tuple"):
        export_onnx.export_model(_Unexportable("tuple"), images, {}, "my_models:build")


def test_a_parity_failure_writes_nothing_and_keeps_an_existing_file(project, tmp_path, monkeypatch):
    real = export_onnx.run_onnx
    monkeypatch.setattr(export_onnx, "run_onnx", lambda session, images: real(session, images) + 2e-4)
    fresh, existing = tmp_path / "new.onnx", tmp_path / "old.onnx"
    existing.write_bytes(b"the previous export")
    for out in (fresh, existing):
        with pytest.raises(export_onnx.ParityError, match=r"differ from PyTorch's by up to 0.0002 .* not written"):
            export_onnx.export_model_file(model_path=project["model"], out=out, images=4)
    assert not fresh.exists() and existing.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]  # no temporary file left


def test_cli_bounds_its_options_and_names_missing_inputs(project, tmp_path, capsys):
    base = ["export", "--model-file", str(project["model"]), "--out", str(tmp_path / "m.onnx")]
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--images", "0"])
    assert exit_.value.code == 2 and "--images 0: must be >= 1 (schema $defs.parity_images)" in capsys.readouterr().err
    assert main(base + ["--data", str(tmp_path / "nowhere"), "--tracking", "none"]) == 1
    assert "nowhere: the dataset folder for the parity check is not there; give it with --data" in \
        capsys.readouterr().err
    assert main(base + ["--test-embedding", "plain", "--images", "3", "--tracking", "none"]) == 0
    out = capsys.readouterr().out
    assert "parity on 3 test images" in out and "not recorded by a tracker" in out
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert meta["test_embedding"] == "plain"


def test_a_model_trained_without_mlflow_is_exported_but_not_recorded(tmp_path, caplog):
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"graph")
    provenance = {"dataset": "synthetic", "model": "mutual", "seed": 0, "config_hash": "ab", "tracking": "none"}
    assert tracking.NullTracker().log_export(provenance, model_file) is None
    with caplog.at_level("WARNING", logger="reid.tracking"):
        assert tracking.MlflowTracker("reid").log_export(provenance, model_file) is None
    assert "trained without MLflow" in caplog.text and str(model_file) in caplog.text


def test_the_default_inputs_of_a_pipeline_model_and_of_a_readings_model(tmp_path):
    """`reid export` finds data/<dataset> and results/<dataset>/mean_image.pt for both layouts."""
    root = tmp_path / "work"
    main = root / "results/synthetic/baseline/seed0/model.pt"
    reading = root / "results/synthetic/readings/bot_no_bnneck/seed0/model.pt"
    want = (root / "data/synthetic", root / "results/synthetic/mean_image.pt")
    assert export_onnx.pipeline_inputs(main, "synthetic") == want
    assert export_onnx.pipeline_inputs(reading, "synthetic") == want
    # a file outside the pipeline's layout: three levels up, as before
    loose = tmp_path / "a/b/c/model.pt"
    assert export_onnx.pipeline_inputs(loose, "synthetic") == (tmp_path.parent / "data/synthetic",
                                                                tmp_path / "a/mean_image.pt")
