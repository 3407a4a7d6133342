"""Issue 21 kinds 1 and 2: a stage checks what a later step relies on before its work, and what it is
about to commit before it commits; through `python -m reid` and `snakemake` as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = {"backbone": "resnet18", "embedding_dim": 32, "dropout": 0.5}
TRAIN = {"height": 32, "width": 16, "epochs": 2, "batch_pairs": 8, "lr_step": 1, "device": "cpu"}


def reid(*args, cwd, pythonpath=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, pythonpath)]), "OMP_NUM_THREADS": "1"}
    env.pop("REID_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "reid", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def train(tmp_path, tiny_dataset, name, model="baseline", train=TRAIN, extra=(), pythonpath=()):
    root, mean = tiny_dataset
    return reid("train", "--dataset", "tiny", "--model", model, "--seed", 3, "--data", root, "--mean-image", mean,
                "--model-params", json.dumps(MODEL), "--train-params", json.dumps(train), "--tracking", "none",
                "--out-dir", tmp_path / name, "--checkpoint-dir", tmp_path / f"{name}-ckpt", *extra,
                cwd=tmp_path, pythonpath=pythonpath)


# ------------------------------------------------------------------ kind 1: fail before the work

def test_a_custom_model_whose_embed_returns_a_tuple_fails_at_build_naming_its_builder(tmp_path, tiny_dataset):
    (tmp_path / "tuple_model.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, n):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
        "        self.head = nn.Linear(8, n)\n"
        "    def embed(self, x):\n"
        "        f = self.body(x)\n"
        "        return f, f  # a tuple: the LoggedModel export would fail after training\n"
        "    def forward(self, x1, x2):\n"
        "        return {'logits1': self.head(self.body(x1)), 'logits2': self.head(self.body(x2))}\n"
        "def build(num_classes, config):\n"
        "    return Net(num_classes)\n")
    proc = train(tmp_path, tiny_dataset, "out", model="tupled", extra=["--custom-model", '{"entry": "tuple_model:build"}'],
                 pythonpath=[tmp_path])
    assert proc.returncode == 1
    assert "tuple_model:build: embed(x) returned tuple, expected a floating-point tensor" in proc.stderr
    assert "epoch 1/" not in proc.stdout  # before the first epoch
    assert not (tmp_path / "out" / "model.pt").exists() and not list((tmp_path / "out-ckpt").glob("*"))


def test_the_probe_changes_nothing_model_pt_is_bit_identical(tmp_path, tiny_dataset, monkeypatch, mlflow_store):
    """The probe observes only: the same training without it writes the same bytes."""
    from reid import tracking
    from reid import train as stage
    from reid.typed_config import ModelConfig, TrainConfig

    def run(name):
        out = tmp_path / name
        stage.train(data_root=tiny_dataset[0], mean_image=tiny_dataset[1], dataset="tiny", variant="mutual", seed=3,
                    model_cfg=ModelConfig.from_dict(MODEL), train_cfg=TrainConfig.from_dict(TRAIN),
                    tracker=tracking.NullTracker(), checkpoint_dir=out / "ckpt",
                    outputs=stage.TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json"))
        return (out / "model.pt").read_bytes()

    calls = []
    real = stage.probe
    monkeypatch.setattr(stage, "probe", lambda *a, **k: (calls.append(1), real(*a, **k)))
    probed = run("probed")
    monkeypatch.setattr(stage, "probe", lambda *a, **k: None)
    assert calls and probed == run("plain")


def test_integer_keys_refuse_floats_when_the_config_is_parsed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for given, key in (("train={epochs: 2.0}", "train.epochs: 2.0 is not of type 'integer'"),
                       ("seeds=[0.0]", "seeds.0: 0.0 is not of type 'integer'")):
        proc = subprocess.run([str(BIN / "snakemake"), "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                               str(tmp_path), "--cores", "1", "--config", given],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and key in out, out[-2000:]
        assert "Traceback" not in out and "MissingInputException" not in out
    proc = reid("train", "--dataset", "d", "--model", "baseline", "--seed", 0, "--data", "x", "--mean-image", "m",
                "--model-params", "{}", "--train-params", '{"epochs": 2.0}', "--out-dir", "o", "--checkpoint-dir", "c",
                cwd=tmp_path)
    assert proc.returncode == 2 and "epochs: 2.0 is not of type 'integer'" in proc.stderr


@pytest.mark.parametrize("code, error", [("raise RuntimeError('no licence server')", "RuntimeError: no licence server"),
                                         ("def broken(:\n", "SyntaxError: ")])
def test_a_plugin_that_fails_on_import_is_named_once(tmp_path, code, error):
    (tmp_path / "badplug.py").write_text(code + "\n")
    (tmp_path / "c.yaml").write_text("plugins: [badplug]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "1", "--configfile", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count(f"plugins[0]: importing module 'badplug' failed: {error}") == 1, out[-2000:]
    assert "Traceback" not in out and "line 23" not in out


# ------------------------------------------------------------------ kind 2: no success on a bad result

def test_a_diverging_training_fails_naming_the_epoch_and_writes_no_model(tmp_path, tiny_dataset):
    proc = train(tmp_path, tiny_dataset, "out", train={**TRAIN, "lr": 1e4})
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "error: epoch 1: non-finite training loss" in proc.stderr
    assert not (tmp_path / "out" / "model.pt").exists()
    assert not list((tmp_path / "out-ckpt").glob("*.pt"))  # no checkpoint of a diverged epoch


def test_bf16_on_cpu_is_refused_before_any_work(tmp_path, tiny_dataset):
    proc = train(tmp_path, tiny_dataset, "out", train={**TRAIN, "precision": "bf16"})
    assert proc.returncode == 1
    assert "train.precision: bf16 is refused on the CPU" in proc.stderr
    assert "epoch 1/" not in proc.stdout and not (tmp_path / "out" / "model.pt").exists()


def test_extract_refuses_to_write_non_finite_features_naming_the_files(tmp_path, tiny_dataset):
    assert train(tmp_path, tiny_dataset, "out").returncode == 0
    blob = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith("weight") and blob["state_dict"][k].dim() == 4)
    blob["state_dict"][key].fill_(float("nan"))
    torch.save(blob, tmp_path / "nan.pt")
    out = tmp_path / "features.pt"
    proc = reid("extract", "--model-file", tmp_path / "nan.pt", "--data", tiny_dataset[0], "--mean-image",
                tiny_dataset[1], "--device", "cpu", "--out", out, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{out}: not written:" in proc.stderr and "query features are not finite" in proc.stderr
    assert str(tmp_path / "nan.pt") in proc.stderr and not out.exists()


def test_why_bf16_is_refused_on_cpu_pytorch_alone():
    """PyTorch's CPU bf16 autocast, with no code of this package: the weight gradient of a 3 x 3
    stride-2 convolution over the small feature maps of the smallest training input is garbage
    (non-finite or ~1e30) where fp32 gives ~1e-2. Should a PyTorch release fix it, this test fails:
    then lift reid.contracts.check_training_precision's refusal."""
    torch.manual_seed(0)
    broken = []
    for cin, (h, w), channels_last in [(64, (1, 1), True), (64, (2, 1), True), (128, (2, 1), True),
                                       (128, (1, 1), True), (64, (2, 1), False)]:
        conv = torch.nn.Conv2d(cin, 2 * cin, 3, stride=2, padding=1, bias=False)
        x = torch.randn(2, cin, h, w)
        if channels_last:
            conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        grads = []
        for bf16 in (False, True):
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = conv(x)
            y.float().square().mean().backward()
            grads.append(conv.weight.grad.clone())
        g32, g16 = grads
        assert torch.isfinite(g32).all() and g32.abs().max() < 1
        broken.append(not torch.isfinite(g16).all() or g16.abs().max() > 1e3)
    assert any(broken)


# ------------------------------------------------------------------ kind 3: commit as one

def test_training_commits_model_and_history_together(tmp_path, tiny_dataset, monkeypatch, mlflow_store):
    """A full disk while one of model.pt and history.csv is written leaves both old files, and the
    error names the file."""
    import csv
    import errno

    from reid import io, tracking
    from reid import train as stage
    from reid.typed_config import ModelConfig, TrainConfig

    out = tmp_path / "run"
    outputs = stage.TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json")

    def run(epochs):
        stage.train(data_root=tiny_dataset[0], mean_image=tiny_dataset[1], dataset="tiny", variant="baseline", seed=3,
                    model_cfg=ModelConfig.from_dict(MODEL), train_cfg=TrainConfig.from_dict({**TRAIN, "epochs": epochs}),
                    tracker=tracking.NullTracker(), checkpoint_dir=tmp_path / "ckpt", outputs=outputs)

    run(1)
    old = {p: p.read_bytes() for p in (outputs.model, outputs.history)}

    class DiskFull(csv.DictWriter):  # the disk fills while history.csv is written
        def writeheader(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(csv, "DictWriter", DiskFull)
        with pytest.raises(io.WriteError, match=r"could not write .*history.csv: No space left on device"):
            run(2)
    assert {p: p.read_bytes() for p in old} == old
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.pt", "run.json"]
