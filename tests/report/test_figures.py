"""Figures from tiny fake inputs: PNGs at least 1000 px wide; the ranked list obeys the protocol."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from reid.report import figures
from reid.report.runs import ReportInputError, load_runs


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def write_history(path, epochs, id0, verif0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["epoch", "lr", "loss_total", "loss_id", "loss_verif", "acc_id", "acc_verif", "images_per_s", "seconds"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in range(1, epochs + 1):
            w.writerow([e, 0.01, id0 / e + verif0 / e, id0 / e, verif0 / e, 0.5, 0.6, 100.0, 1.0])
    return path


def test_losses_figure(tmp_path):
    hb = write_history(tmp_path / "b" / "history.csv", 5, 5.0, 0.7)
    hm = write_history(tmp_path / "m" / "history.csv", 5, 4.0, 0.6)
    out = figures.losses_figure({"baseline": hb, "mutual attention": hm}, tmp_path / "fig" / "losses_x.png")
    w, h = png_size(out)
    assert w >= 1000 and h > 300
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss_id\n1,0.5\n")
    with pytest.raises(ReportInputError, match=r"bad.csv: missing column\(s\) loss_verif"):
        figures.losses_figure({"x": bad}, tmp_path / "never.png")


def test_cmc_figure_averages_seeds(tmp_path):
    paths = []
    for model, base in (("baseline", 0.3), ("mutual", 0.5)):
        for seed in (0, 1):
            d = tmp_path / model / f"seed{seed}"
            d.mkdir(parents=True)
            cmc = [min(1.0, base + 0.1 * seed + 0.01 * k) for k in range(50)]
            m = {"dataset": "synthetic", "model": model, "seed": seed, "mlflow_run_id": "r", "rank1": cmc[0],
                 "cmc": cmc, "rerank/cmc": [min(1.0, c + 0.05) for c in cmc]}
            (d / "metrics.json").write_text(json.dumps(m))
            paths.append(d / "metrics.json")
    runs = load_runs(paths)
    mutual = [r for r in runs if r.model == "mutual"]
    curve = figures.mean_cmc(mutual, "cmc", 50)
    assert curve.shape == (50,)
    assert curve[0] == pytest.approx(100 * (0.5 + 0.6) / 2)  # mean of the two seeds' rank-1, in percent
    out = figures.cmc_figure(runs, tmp_path / "cmc.png")
    assert png_size(out)[0] >= 1000
    # a gallery of 28 images: evaluation writes 28 entries, the figure shows ranks 1..28
    for r in runs:
        r.info["cmc"], r.info["rerank/cmc"] = r.info["cmc"][:28], r.info["rerank/cmc"][:28]
    assert figures.mean_cmc([r for r in runs if r.model == "mutual"], "cmc", 50).shape == (28,)
    assert png_size(figures.cmc_figure(runs, tmp_path / "cmc28.png"))[0] >= 1000
    runs[0].info["cmc"] = "0.5"
    with pytest.raises(ReportInputError, match="cmc must be a non-empty list of fractions"):
        figures.mean_cmc(runs[:1], "cmc", 50)


# ---------------------------------------------------------------- ranked list

def fake_dataset(tmp_path, n_ids=6, dim=8, seed=0):
    """Queries: one per identity (camera 1). Gallery: each identity in cameras 1 and 2, plus junk and distractors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids + 1, dim))
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    def img(name, pid):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        Image.new("RGB", (16, 32), colour).save(img_dir / name)
        return f"imgs/{name}"
    q_feats, q_pids, q_cams, q_paths = [], [], [], []
    g_feats, g_pids, g_cams, g_paths = [], [], [], []
    for pid in range(1, n_ids + 1):
        q_feats.append(centres[pid] + 0.05 * rng.normal(size=dim))
        q_pids.append(pid); q_cams.append(1); q_paths.append(img(f"q{pid}.jpg", pid))
        for cam in (1, 2):
            g_feats.append(centres[pid] + 0.05 * rng.normal(size=dim))
            g_pids.append(pid); g_cams.append(cam); g_paths.append(img(f"g{pid}_{cam}.jpg", pid))
    for k in range(4):  # junk right on top of query 1 and distractors anywhere
        g_feats.append(centres[1]); g_pids.append(-1); g_cams.append(3); g_paths.append(img(f"junk{k}.jpg", -1))
        g_feats.append(rng.normal(size=dim)); g_pids.append(0); g_cams.append(3); g_paths.append(img(f"d{k}.jpg", 0))
    blob = {"query_feats": torch.tensor(np.array(q_feats), dtype=torch.float32),
            "gallery_feats": torch.tensor(np.array(g_feats), dtype=torch.float32),
            "query_pids": torch.tensor(q_pids), "query_camids": torch.tensor(q_cams),
            "gallery_pids": torch.tensor(g_pids), "gallery_camids": torch.tensor(g_cams),
            "query_paths": q_paths, "gallery_paths": g_paths}
    path = tmp_path / "features.pt"
    torch.save(blob, path)
    return path, blob


def brute_force_rank(blob, qi, top_k):
    """Independent check: loop over the gallery, plain Euclidean on normalised vectors, protocol exclusions."""
    q = blob["query_feats"][qi].double()
    q = q / q.norm()
    scored = []
    for gi in range(len(blob["gallery_pids"])):
        pid, cam = int(blob["gallery_pids"][gi]), int(blob["gallery_camids"][gi])
        if pid == -1 or (pid == int(blob["query_pids"][qi]) and cam == int(blob["query_camids"][qi])):
            continue
        g = blob["gallery_feats"][gi].double()
        scored.append((float((q - g / g.norm()).norm()), gi))
    return [gi for _, gi in sorted(scored)[:top_k]]


def test_ranked_gallery_matches_brute_force_and_excludes_junk_and_same_camera(tmp_path):
    _, blob = fake_dataset(tmp_path)
    n = lambda k: blob[k].numpy()  # noqa: E731
    queries = list(range(6))
    ranked = figures.ranked_gallery(n("query_feats"), n("gallery_feats"), n("query_pids"), n("query_camids"),
                                    n("gallery_pids"), n("gallery_camids"), queries, top_k=5)
    for qi, r in zip(queries, ranked):
        assert list(r) == brute_force_rank(blob, qi, 5)
        assert all(blob["gallery_pids"][g] != -1 for g in r)
        same = [g for g in r if blob["gallery_pids"][g] == blob["query_pids"][qi]]
        assert same and all(blob["gallery_camids"][g] == 2 for g in same)
        assert blob["gallery_pids"][r[0]] == blob["query_pids"][qi]  # well-separated clusters: rank 1 correct


def test_pick_queries_is_reproducible_and_needs_a_valid_match():
    qp, qc = np.array([1, 2, 3, 4]), np.array([1, 1, 1, 1])
    gp, gc = np.array([1, 2, 3, 4, 4]), np.array([2, 1, 2, 2, 1])  # pid 2 only in the query's camera
    picks = figures.pick_queries(qp, qc, gp, gc, n=3, seed=7)
    assert picks == figures.pick_queries(qp, qc, gp, gc, n=3, seed=7)
    assert sorted(picks) == [0, 2, 3]
    with pytest.raises(ReportInputError, match="no query has a valid gallery match"):
        figures.pick_queries(qp[1:2], qc[1:2], gp, gc, n=1, seed=0)


def test_ranked_figure(tmp_path):
    path, _ = fake_dataset(tmp_path)
    out = figures.ranked_figure({"baseline": path, "mutual attention": path}, tmp_path / "ranked.png",
                                root=tmp_path, n_queries=2, top_k=10)
    w, h = png_size(out)
    assert w >= 1000 and h > 400
    with pytest.raises(ReportInputError, match="not found"):
        figures.ranked_figure({"b": path}, tmp_path / "r2.png", root=tmp_path / "nowhere", n_queries=1)


# ---------------------------------------------------------------- attention maps

class StandIn(torch.nn.Module):
    """A tiny model with the contract of the real one: activation_maps(batch) -> (B, h, w)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)

    def activation_maps(self, x, partner=None, stage=4):
        maps = self.conv(x).abs().mean(dim=1)
        return maps if partner is None else maps * self.conv(partner).abs().mean(dim=1)


def test_compute_activation_maps_and_overlay(tmp_path):
    images = [Image.new("RGB", (16, 32), (i * 40, 100, 200)) for i in range(5)]
    tf = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)  # noqa: E731
    maps = figures.compute_activation_maps(StandIn(), tf, images, batch_size=2)
    assert maps.shape == (5, 8, 4)
    ov = figures._overlay(np.asarray(images[0]), maps[0])
    assert ov.shape == (32, 16, 3) and 0 <= ov.min() and ov.max() <= 1
    # the bare map (the paper's "activation map" column) is what the overlay blends in, half and half
    heat = figures._heat(maps[0], 32, 16)
    assert np.allclose(ov, (0.5 * np.asarray(images[0]) / 255 + 0.5 * heat).clip(0, 1))
    assert heat.shape == (32, 16, 3) and heat.max() <= 1 and not np.allclose(heat, ov)
    out = figures.attention_figure([np.asarray(im) for im in images], {"baseline": maps, "mutual": maps[::-1]},
                                   tmp_path / "att.png")
    assert png_size(out)[0] >= 1000
    with pytest.raises(ReportInputError, match="3 maps for 5 images"):
        figures.attention_figure([np.asarray(im) for im in images], {"baseline": maps[:3]}, tmp_path / "x.png")


def test_attention_figure_from_files_with_stand_in_loaders(tmp_path, monkeypatch):
    import reid.data.transforms as transforms
    import reid.models.runtime as runtime

    path, _ = fake_dataset(tmp_path)
    seen, calls = [], []
    class Recording(StandIn):
        def activation_maps(self, x, partner=None, stage=4):
            calls.append((x.shape[0], partner is not None, stage, tuple(x.shape[2:])))
            return super().activation_maps(x, partner, stage)
    def fake_load(p):
        seen.append(p)
        return Recording(), {"height": 32, "width": 16, "variant": "mutual" if p == "m.pt" else "baseline"}
    def fake_tf(mean_image, height, width, normalisation=None):
        assert (height, width) == (128, 64)  # layer3 with >= 8 rows: 4x the training size of 32 x 16
        return lambda im: torch.from_numpy(np.asarray(im.resize((width, height)), dtype=np.float32) / 255).permute(2, 0, 1)
    monkeypatch.setattr(runtime, "load_trained_model", fake_load)
    monkeypatch.setattr(transforms, "load_eval_transform", fake_tf)
    out = figures.attention_figure_from_files({"baseline": "b.pt", "mutual": "m.pt"}, path, tmp_path / "mean.pt",
                                              tmp_path / "attention.png", root=tmp_path, n_images=4)
    assert seen == ["b.pt", "m.pt"]
    # baseline: the images alone; mutual: alone and with their same-identity partners
    assert calls == [(4, False, 3, (128, 64)), (4, False, 3, (128, 64)), (4, True, 3, (128, 64))]
    assert png_size(out)[0] >= 1000


def test_figure_resolution_faithful_at_the_papers_size_finer_at_the_demos():
    paper = figures.figure_resolution(256, 188)
    assert (paper.stage, paper.height, paper.width, paper.cells) == (4, 256, 188, (8, 6))
    assert "as in the paper's Figure 4" in paper.describe()
    demo = figures.figure_resolution(64, 32, [3, 4])
    assert (demo.stage, demo.height, demo.width, demo.cells) == (3, 128, 64, (8, 4))
    assert "128 x 64" in demo.describe() and "2 x 1" in demo.describe()
    assert figures.figure_resolution(64, 32, [4]).stage == 4  # the first attention layer of the models
    assert figures.figure_resolution(64, 32, [4]).cells[0] >= figures.FIGURE_MIN_ROWS


def test_pick_partners_same_identity_other_camera(tmp_path):
    _, blob = fake_dataset(tmp_path)
    blob = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in blob.items()}
    partners = figures.pick_partners(blob, [0, 3])
    for q, g in zip([0, 3], partners):
        assert blob["gallery_pids"][g] == blob["query_pids"][q]
        assert blob["gallery_camids"][g] != blob["query_camids"][q]


def test_attention_figure_leaves_out_a_model_without_activation_maps(tmp_path, monkeypatch):
    import reid.data.transforms as transforms
    import reid.models.runtime as runtime

    path, _ = fake_dataset(tmp_path)

    class NoMaps(torch.nn.Module):  # a custom model need not have activation_maps
        def embed(self, x):
            return x.flatten(1)

    def fake_load(p):
        return (StandIn() if p == "b.pt" else NoMaps()), {"height": 32, "width": 16,
                                                          "variant": "baseline" if p == "b.pt" else "mine"}
    monkeypatch.setattr(runtime, "load_trained_model", fake_load)
    monkeypatch.setattr(transforms, "load_eval_transform", lambda mean, h, w, norm=None: lambda im: torch.from_numpy(
        np.asarray(im.resize((w, h)), dtype=np.float32) / 255).permute(2, 0, 1))
    drawn = {}
    monkeypatch.setattr(figures, "attention_figure", lambda images, maps, out, title, partners=None, note="":
                        drawn.update(maps=list(maps), note=note) or out)
    figures.attention_figure_from_files({"baseline": "b.pt", "my net": "m.pt"}, path, tmp_path / "mean.pt",
                                        tmp_path / "a.png", root=tmp_path, n_images=2)
    assert drawn["maps"] == ["baseline"] and drawn["note"].endswith("not shown (no activation_maps): my net")
    with pytest.raises(ReportInputError, match="none of my net has activation_maps"):
        figures.attention_figure_from_files({"my net": "m.pt"}, path, tmp_path / "mean.pt", tmp_path / "b.png",
                                            root=tmp_path, n_images=2)
