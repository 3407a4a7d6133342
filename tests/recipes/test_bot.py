"""The strong baseline's recipe (reid.recipes.bot) and model (reid.models.bot), against brute-force computations."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from reid.models.bot import BotModel
from reid.recipes.bot import CenterLoss, batch_hard_triplet_loss, lr_at, pk_batches
from reid.typed_config import BotConfig


def brute_force_triplet(features: torch.Tensor, labels: list[int], margin: float) -> float:
    """Every anchor's hardest positive and negative by explicit loops over pairs (math.dist)."""
    rows = features.tolist()
    total = 0.0
    for a, fa in enumerate(rows):
        pos = [math.dist(fa, fp) for p, fp in enumerate(rows) if labels[p] == labels[a]]  # the anchor included
        neg = [math.dist(fa, fn) for n, fn in enumerate(rows) if labels[n] != labels[a]]
        total += max(0.0, max(pos) - min(neg) + margin)
    return total / len(rows)


@pytest.mark.parametrize("margin", [0.3, 5.0])
def test_batch_hard_triplet_loss_equals_a_brute_force_loop(margin):
    gen = torch.Generator().manual_seed(0)
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    features = torch.randn(12, 7, generator=gen, dtype=torch.float64)
    got = batch_hard_triplet_loss(features, torch.tensor(labels), margin)
    assert float(got) == pytest.approx(brute_force_triplet(features, labels, margin), rel=1e-6, abs=1e-6)


def test_triplet_loss_is_zero_for_well_separated_identities_and_has_finite_gradients():
    features = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]], requires_grad=True)
    loss = batch_hard_triplet_loss(features, torch.tensor([0, 0, 1, 1]), 0.3)
    assert float(loss.detach()) == 0.0
    dup = torch.zeros(4, 3, requires_grad=True)  # identical images: distances 0, the 1e-12 floor keeps sqrt finite
    batch_hard_triplet_loss(dup, torch.tensor([0, 0, 1, 1]), 0.3).backward()
    assert torch.isfinite(dup.grad).all()


def test_label_smoothing_equals_the_smoothed_targets_by_hand():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    labels = [2, 0, 3, 3, 1]
    eps, classes = 0.1, 4
    want = 0.0
    for row, y in zip(logits.tolist(), labels):
        log_z = math.log(sum(math.exp(v) for v in row))
        for c, v in enumerate(row):
            q = (1 - eps) * (c == y) + eps / classes  # Szegedy et al. 2016; Luo et al. eq. 1
            want -= q * (v - log_z)
    want /= len(labels)
    got = F.cross_entropy(logits, torch.tensor(labels), label_smoothing=eps)  # what the recipe calls
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_center_loss_is_the_mean_squared_distance_to_each_class_center():
    torch.manual_seed(0)
    loss = CenterLoss(3, 2)
    feats = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    labels = torch.tensor([2, 0, 2])
    c = loss.centers.detach()
    want = sum(float(((feats[i] - c[labels[i]]) ** 2).sum()) for i in range(3)) / 3
    assert float(loss(feats, labels)) == pytest.approx(want, rel=1e-6)


def test_pk_batches_hold_p_identities_times_k_images_and_repeat_a_short_identity():
    # identity 5 has a single image, identity 6 three (fewer than K = 4), the others 4-9
    labels = [pid for pid, n in ((0, 9), (1, 4), (2, 5), (3, 8), (4, 4), (5, 1), (6, 3), (7, 6)) for _ in range(n)]
    p, k = 3, 4
    batches = pk_batches(labels, p, k, seed=0, epoch=0)
    assert batches
    used = Counter()
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == p and set(counts.values()) == {k}  # P identities, K images each
        for pid in counts:
            group = [i for i in batch if labels[i] == pid]
            used[pid] += 1
            if labels.count(pid) >= k:
                assert len(set(group)) == k  # drawn without replacement
            else:
                assert set(group) <= {i for i, x in enumerate(labels) if x == pid}  # repeats of its own images
    # every identity is used at most floor(n / K) times (at least once when it has fewer than K images)
    for pid, n in Counter(labels).items():
        assert used[pid] <= max(1, n // k)
    assert pk_batches(labels, p, k, 0, 0) == batches  # deterministic by (seed, epoch)
    assert pk_batches(labels, p, k, 0, 1) != batches
    with pytest.raises(ValueError, match="identities_per_batch is 9 but the training split has 8 identities"):
        pk_batches(labels, 9, k, 0, 0)


def test_warm_up_and_steps_at_their_boundary_epochs():
    cfg = BotConfig.from_dict({})  # the published configuration
    base = 3.5e-4
    expected = {0: base * (0.01 * 0.9 + 0.1), 8: base * (0.01 * 0.1 + 0.9), 9: base, 38: base, 39: base * 0.1,
                68: base * 0.1, 69: base * 0.01, 119: base * 0.01}
    for epoch, lr in expected.items():
        assert lr_at(epoch, cfg) == pytest.approx(lr, rel=1e-12), epoch
    # the warm-up rises linearly, one step per epoch
    steps = [lr_at(e + 1, cfg) - lr_at(e, cfg) for e in range(8)]
    assert all(s == pytest.approx(steps[0]) for s in steps) and steps[0] == pytest.approx(base * 0.99 / 10)
    assert lr_at(0, BotConfig.from_dict({"warmup_epochs": 0})) == base


@pytest.mark.parametrize("neck_feat", ["after", "before"])
def test_bnneck_test_features_are_the_normalised_pooled_feature(neck_feat):
    torch.manual_seed(0)
    model = BotModel(5, backbone="resnet18", last_stride=1, neck="bnneck", neck_feat=neck_feat)
    assert model.classifier.bias is None and not model.bottleneck.bias.requires_grad
    x = torch.randn(8, 3, 32, 16)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(x)  # training mode: batch statistics
    F.cross_entropy(out["logits"], torch.arange(8) % 5).backward()
    opt.step()
    assert torch.equal(model.bottleneck.bias, torch.zeros(512))  # no shift, ever
    with torch.no_grad():
        model.eval()
        f_t = model.pooled(x)
        bn = model.bottleneck
        f_i = (f_t - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
        model.train()
        got = model.embed(x)
    assert model.training  # embed leaves the mode as it found it
    want = f_i if neck_feat == "after" else f_t
    assert got.shape == (8, 512) and torch.allclose(got, want, atol=1e-5)


def test_last_stride_one_doubles_the_feature_map():
    x = torch.randn(1, 3, 64, 32)
    for stride, size in ((1, (4, 2)), (2, (2, 1))):
        model = BotModel(3, backbone="resnet18", last_stride=stride)
        assert model.activation_maps(x).shape[-2:] == size


# ---------------------------------------------------------------- through the training stage

TINY_BOT = {"height": 32, "width": 16, "padding": 2, "epochs": 3, "identities_per_batch": 3,
            "images_per_identity": 2, "warmup_epochs": 2, "lr_milestones": [2]}  # center loss on: the default


def _train_bot(tmp_path, tiny_dataset, name, bot=TINY_BOT, kill_after=None, monkeypatch=None):
    from reid import tracking
    from reid.checkpoint import Checkpointer
    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    root, mean = tiny_dataset
    out = tmp_path / name
    outputs = TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json")
    if kill_after is not None:
        original, saved = Checkpointer.save, []

        def save(self, state):
            path = original(self, state)
            saved.append(state["epoch"])
            if len(saved) == kill_after:
                raise SystemExit("killed")
            return path

        monkeypatch.setattr(Checkpointer, "save", save)
    kwargs = dict(data_root=root, mean_image=mean, dataset="tiny", variant="bot", seed=3,
                  model_cfg=ModelConfig.from_dict({"backbone": "resnet18"}),
                  train_cfg=TrainConfig.from_dict({"device": "cpu"}), recipe_cfg=BotConfig.from_dict(bot),
                  tracker=tracking.NullTracker(), outputs=outputs, checkpoint_dir=out / "ckpt")
    try:
        train(**kwargs)
    except SystemExit:
        monkeypatch.undo()
        train(**kwargs)  # the retry resumes from the checkpoint
    return outputs


def test_bot_training_resumes_bit_identically_and_the_model_file_rebuilds(tmp_path, tiny_dataset, monkeypatch):
    from reid.models.runtime import load_trained_model

    straight = _train_bot(tmp_path, tiny_dataset, "straight")
    resumed = _train_bot(tmp_path, tiny_dataset, "resumed", kill_after=2, monkeypatch=monkeypatch)
    a = torch.load(straight.model, weights_only=False)
    b = torch.load(resumed.model, weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    drop_time = lambda path: [line.rsplit(",", 2)[0] for line in path.read_text().splitlines()]  # noqa: E731
    assert drop_time(straight.history) == drop_time(resumed.history)
    header = straight.history.read_text().splitlines()[0].split(",")
    assert header == ["epoch", "lr", "loss_total", "loss_id", "loss_triplet", "loss_center", "acc_id",
                      "images_per_s", "seconds"]
    # extraction's path: the model file rebuilds through the variant's builder, test features after the BNNeck
    model, meta = load_trained_model(straight.model)
    assert meta["variant"] == "bot" and meta["builder"]["entry"] == "reid.models.bot:build"
    assert (meta["height"], meta["width"]) == (32, 16)
    assert model.embed(torch.zeros(2, 3, 32, 16)).shape == (2, 512)


def test_bot_exports_to_onnx_with_the_pipelines_features():
    from reid import export_onnx

    torch.manual_seed(0)
    model = BotModel(5, backbone="resnet18").eval()
    images = torch.randn(4, 3, 32, 16, generator=torch.Generator().manual_seed(1))
    graph, worst = export_onnx.export_model(model, images, {"variant": "bot"}, "variant bot")
    assert 0 <= worst <= 1e-4  # the largest difference export_model measured against PyTorch
