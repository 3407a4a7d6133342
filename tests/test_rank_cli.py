"""`reid rank`: one query image against a folder of images, with a trained model file."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reid.cli import main
from reid.models import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """results/<dataset>/mean_image.pt and results/<dataset>/<model>/seed0/model.pt, as the pipeline lays them out."""
    root = tmp_path_factory.mktemp("results") / "mydata"
    kwargs = {"variant": "baseline", "num_classes": 3, "backbone": "resnet18", "embedding_dim": 16}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(**kwargs, pretrained=None)
    (root / "baseline" / "seed0").mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"model_kwargs": kwargs, "height": 32, "width": 16}},
               root / "baseline" / "seed0" / "model.pt")
    torch.save({"mean": torch.full((3, 64, 32), 0.5), "std": torch.full((3,), 0.25)}, root / "mean_image.pt")
    return root


@pytest.fixture()
def gallery(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "gallery"
    (folder / "more").mkdir(parents=True)
    names = ["a.jpg", "b.PNG", "c.bmp", "more/d.jpeg", "more/e.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0")
    return folder, names


def test_rank_puts_the_query_first_and_orders_by_distance(run_dir, gallery, tmp_path, capsys):
    folder, names = gallery
    query = tmp_path / "query.bmp"
    shutil.copy(folder / "more" / "d.jpeg", query)
    out = tmp_path / "ranked.png"
    assert main(["rank", "--model-file", str(run_dir / "baseline" / "seed0" / "model.pt"), "--query", str(query),
                 "--gallery", str(folder), "--top", "3", "--out", str(out), "--threads", "1"]) == 0
    lines = [l.split() for l in capsys.readouterr().out.splitlines() if l.strip()[:1].isdigit()]
    assert [int(l[0]) for l in lines] == [1, 2, 3]
    assert lines[0][2].endswith("more/d.jpeg") and float(lines[0][1]) < 1e-4  # the same pixels
    distances = [float(l[1]) for l in lines]
    assert distances == sorted(distances)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 400


def test_rank_distances_match_a_direct_embedding(run_dir, gallery, tmp_path):
    from reid.data.transforms import load_eval_transform
    from reid.features import rank_gallery_folder
    from reid.models.runtime import load_trained_model

    folder, names = gallery
    query = folder / "a.jpg"
    model_file = run_dir / "baseline" / "seed0" / "model.pt"
    ranked = rank_gallery_folder(model_path=model_file, mean_image=run_dir / "mean_image.pt", query=query,
                                 gallery=folder, top=10)
    assert sorted(p for p, _ in ranked) == sorted(str(folder / n) for n in names)  # every image, nothing else
    model, meta = load_trained_model(model_file)
    transform = load_eval_transform(run_dir / "mean_image.pt", meta["height"], meta["width"])
    with torch.no_grad():
        emb = lambda p: torch.nn.functional.normalize(model.embed(transform(p)[None]), dim=1)[0]  # noqa: E731
        q = emb(query)
        for path, distance in ranked:
            assert distance == pytest.approx(float((q - emb(path)).norm()), abs=1e-5)


def test_rank_errors_name_what_is_missing(run_dir, tmp_path, capsys):
    model_file = run_dir / "baseline" / "seed0" / "model.pt"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "list.txt").write_text("x")
    Image.new("RGB", (16, 32)).save(tmp_path / "q.jpg")
    assert main(["rank", "--model-file", str(model_file), "--query", str(tmp_path / "q.jpg"),
                 "--gallery", str(tmp_path / "empty")]) == 1
    assert "no image that Pillow can read" in capsys.readouterr().err
    moved = tmp_path / "elsewhere" / "a" / "b" / "model.pt"
    moved.parent.mkdir(parents=True)
    shutil.copy(model_file, moved)
    assert main(["rank", "--model-file", str(moved), "--query", str(tmp_path / "q.jpg"),
                 "--gallery", str(tmp_path / "empty")]) == 1
    assert "give it with --mean-image" in capsys.readouterr().err


def test_rank_embeds_in_the_precision_the_model_was_trained_in(run_dir, gallery, tmp_path):
    """As extract: a model trained under bf16 autocast (meta precision) is ranked under bf16 autocast."""
    from reid.data.transforms import load_eval_transform
    from reid.features import rank_gallery_folder
    from reid.models.runtime import load_trained_model

    folder, names = gallery
    blob = torch.load(run_dir / "baseline" / "seed0" / "model.pt", weights_only=True)
    blob["meta"]["precision"] = "bf16"
    model_file = tmp_path / "bf16" / "model.pt"
    model_file.parent.mkdir()
    torch.save(blob, model_file)
    query = folder / "a.jpg"
    ranked = dict(rank_gallery_folder(model_path=model_file, mean_image=run_dir / "mean_image.pt", query=query,
                                      gallery=folder, top=10))
    model, meta = load_trained_model(model_file)
    transform = load_eval_transform(run_dir / "mean_image.pt", meta["height"], meta["width"])

    def distances(bf16: bool) -> dict:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = lambda p: torch.nn.functional.normalize(model.embed(transform(p)[None]).float(), dim=1)[0]  # noqa: E731
            q = emb(query)
            return {path: float((q - emb(path)).norm()) for path in ranked}

    in_bf16, in_fp32 = distances(True), distances(False)
    assert max(abs(ranked[p] - in_fp32[p]) for p in ranked) > 1e-4  # the two precisions are told apart
    for path, distance in ranked.items():
        assert distance == pytest.approx(in_bf16[path], abs=2e-3)


def test_rank_refuses_a_custom_model_whose_embedding_is_not_b_by_d(gallery, tmp_path, monkeypatch):
    """As extract: the model's test embedding is probed before any image is read; a builder's model whose
    embed(x) gives one number per image is named."""
    from reid.features import rank_gallery_folder
    from reid.models.custom import CustomModelError

    (tmp_path / "rank_flat_model.py").write_text(
        "import torch\n"
        "class Flat(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.ones(1))\n"
        "    def embed(self, x):\n"
        "        return x.mean(dim=(1, 2, 3)) * self.w\n"
        "def build(num_classes, config):\n"
        "    return Flat()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model_file = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.ones(1)},
                "meta": {"builder": {"entry": "rank_flat_model:build", "args": {}, "num_classes": 3, "config": {}},
                         "height": 32, "width": 16}}, model_file)
    torch.save({"mean": torch.full((3, 64, 32), 0.5), "std": torch.full((3,), 0.25)}, tmp_path / "mean_image.pt")
    folder, _ = gallery
    with pytest.raises(CustomModelError, match="rank_flat_model:build"):
        rank_gallery_folder(model_path=model_file, mean_image=tmp_path / "mean_image.pt", query=folder / "a.jpg",
                            gallery=folder, top=3)
