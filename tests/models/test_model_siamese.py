"""The Siamese model: variants, the single vs pair paths, symmetry, gradients, determinism, a tiny overfit."""

import warnings

import pytest
import torch

from reid.models import VARIANTS, build_model, pair_loss
from reid.models.backbone import run_stage, run_stem

CLASSES = 3
SHAPE = (3, 64, 32)


def make(variant, seed=0, **kwargs):
    kwargs.setdefault("backbone", "resnet18")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init warning: tested on its own below
        return build_model(variant, CLASSES, **kwargs)


def run(model, x1, x2=None):
    """One training forward as a dict: its PairOutput fields, and the embeddings its heads saw, captured
    from model.embedding (emb1/emb2 the identity classifier's, pair_emb1/pair_emb2 the verifier's)."""
    seen = []
    handle = model.embedding.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        out = model(x1, x2)
    finally:
        handle.remove()
    b = x1.shape[0]
    pair = seen[-1] if out.verif_logits is not None else None
    return {**out._asdict(), "emb1": seen[0][:b], "emb2": seen[0][b:] if x2 is not None else None,
            "pair_emb1": None if pair is None else pair[:b], "pair_emb2": None if pair is None else pair[b:]}


def images(n, seed):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny convolutions gain nothing from 2 threads; on a shared box the second one spins idle."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair():
    return images(2, 1), images(2, 2)


@pytest.fixture(scope="module")
def mutual():
    return make("mutual").eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes(variant, pair):
    model = make(variant).train()
    out = run(model, *pair)
    for key in ("logits1", "logits2"):
        assert out[key].shape == (2, CLASSES)
    for key in ("emb1", "emb2"):
        assert out[key].shape == (2, 512)
    if variant == "ide":
        assert out["verif_logits"] is None
    else:
        assert out["verif_logits"].shape == (2, 2)
        assert out["pair_emb1"].shape == (2, 512)
    assert model.embed(pair[0]).shape == (2, 512)


def test_variants_hold_the_attention_they_name():
    counts = {}
    for variant in VARIANTS:
        model = make(variant)
        counts[variant] = (sorted(model.self_attention), sorted(model.mutual_attention), model.verifier is not None)
    assert counts == {
        "ide": ([], [], False),
        "baseline": ([], [], True),
        "self_attention": (["3", "4"], [], True),
        "mutual": (["3", "4"], ["3", "4"], True),
    }
    assert sorted(make("mutual", attention_layers=[4, 2]).mutual_attention) == ["2", "4"]
    norms = {m.input_norm for m in make("mutual", attention_norm="none").self_attention.values()}
    assert norms == {"none"}


def test_swapping_the_pair_swaps_the_outputs(pair, mutual):
    x1, x2 = pair
    with torch.no_grad():
        ab, ba = run(mutual, x1, x2), run(mutual, x2, x1)
    torch.testing.assert_close(ab["logits1"], ba["logits2"])
    torch.testing.assert_close(ab["pair_emb1"], ba["pair_emb2"])
    torch.testing.assert_close(ab["pair_emb2"], ba["pair_emb1"])
    torch.testing.assert_close(ab["verif_logits"], ba["verif_logits"])


def test_swap_symmetry_holds_with_batch_statistics(pair):
    model = make("mutual", dropout=0.0).train()  # batch norm on batch statistics, no random masks
    x1, x2 = pair
    with torch.no_grad():
        ab, ba = run(model, x1, x2), run(model, x2, x1)
    torch.testing.assert_close(ab["pair_emb1"], ba["pair_emb2"])
    torch.testing.assert_close(ab["verif_logits"], ba["verif_logits"])


def test_pair_path_depends_on_the_partner_single_path_does_not(mutual):
    x, partner_a, partner_b = images(2, 3), images(2, 4), images(2, 5)
    with torch.no_grad():
        out_a, out_b = run(mutual, x, partner_a), run(mutual, x, partner_b)
        alone = mutual.embed(x)
    torch.testing.assert_close(out_a["emb1"], alone)
    torch.testing.assert_close(out_b["emb1"], alone)
    assert not torch.allclose(out_a["pair_emb1"], out_b["pair_emb1"], atol=1e-4)
    assert not torch.allclose(out_a["pair_emb1"], alone, atol=1e-4)


def _copy_shared_weights(source, target):
    """Load every parameter and buffer of ``source`` that ``target`` also has."""
    own = target.state_dict()
    target.load_state_dict({k: v for k, v in source.state_dict().items() if k in own}, strict=True)
    return target.eval()


def test_single_embedding_is_the_self_attention_model(mutual):
    x = images(2, 6)
    twin = _copy_shared_weights(mutual, make("self_attention", seed=1))
    with torch.no_grad():
        torch.testing.assert_close(mutual.embed(x), twin.embed(x))


def test_plain_embedding_is_the_baseline_model(mutual):
    x = images(2, 7)
    plain = _copy_shared_weights(mutual, make("mutual", seed=1, test_embedding="plain"))
    twin = _copy_shared_weights(mutual, make("baseline", seed=1))
    with torch.no_grad():
        torch.testing.assert_close(plain.embed(x), twin.embed(x))
        assert not torch.allclose(plain.embed(x), mutual.embed(x), atol=1e-4)


def test_mutual_self_embedding_pairs_an_image_with_itself(mutual):
    x = images(2, 8)
    model = _copy_shared_weights(mutual, make("mutual", seed=1, test_embedding="mutual_self"))
    with torch.no_grad():
        # the same function; float sums run in another order (a batch of 2B, not B)
        torch.testing.assert_close(model.embed(x), run(model, x, x)["pair_emb1"], rtol=1e-3, atol=1e-4)


def test_embed_is_eval_mode_and_restores_training(pair):
    model = make("mutual").train()
    x = pair[0]
    first, second = model.embed(x), model.embed(x)  # dropout would make these differ
    torch.testing.assert_close(first, second)
    assert model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(first, run(model, x, pair[1])["emb1"])


def test_pair_path_does_not_touch_running_statistics(pair):
    model = make("mutual").train()
    reference = make("mutual").train()
    with torch.no_grad():
        model(*pair)
        reference.single_embedding(torch.cat(pair))  # the single-image path alone, same batch
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers()):
        if name.startswith("verifier."):
            continue  # the verification head's own batch norm lives on the pair path only; test time never uses it
        torch.testing.assert_close(buffer, expected, msg=f"buffer {name} moved")
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("variant", ["self_attention", "mutual"])
def test_gradients_reach_every_parameter(variant, pair):
    model = make(variant).train()
    out = model(*pair)
    losses = pair_loss(out, torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([True, False]))
    losses["total"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert any(name.startswith("mutual_attention.") for name, _ in model.named_parameters()) == (variant == "mutual")


def test_zero_attention_init_starts_as_the_baseline(pair):
    """attention_init="zero": SA = 0 and MA = 0 at the start, so both paths equal the plain backbone."""
    model = make("mutual", attention_init="zero").train()
    assert all(torch.count_nonzero(sa.fuse_conv.weight) == 0 for sa in model.self_attention.values())
    out = run(model, *pair)
    torch.testing.assert_close(out["pair_emb1"], out["emb1"])
    torch.testing.assert_close(out["pair_emb2"], out["emb2"])
    twin = _copy_shared_weights(model, make("baseline", seed=1))
    with torch.no_grad():
        torch.testing.assert_close(model.embed(pair[0]), twin.embed(pair[0]))


def _attention_without_gradient(model, pair, steps):
    """Per SGD step (lr 0.1), the names of the attention parameters that got no gradient."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([True, False])
    stuck = []
    for _ in range(steps):
        optimizer.zero_grad()
        pair_loss(model(*pair), *labels)["total"].backward()
        stuck.append({n for n, p in model.named_parameters()
                      if "attention" in n and (p.grad is None or not p.grad.abs().sum() > 0)})
        optimizer.step()
    return stuck


def test_zero_attention_init_learns_from_the_second_step(pair):
    """At step 1 only the eq. 4 conv and the MA bias get a gradient (everything else is multiplied by
    SA = 0); once that conv has moved, every attention parameter does."""
    model = make("mutual", attention_init="zero").train()
    stuck = _attention_without_gradient(model, pair, steps=2)
    assert stuck[0] == {f"self_attention.{k}.channel_conv.{w}" for k in (3, 4) for w in ("weight", "bias")} | {
        f"mutual_attention.{k}.conv.weight" for k in (3, 4)}
    assert stuck[1] == set()


def test_zero_attention_init_on_the_pair_path_starts_as_the_baseline_and_learns(pair):
    """identification_path="pair": zeroing eq. 4's conv would leave SA = 0 for ever there (the gradient
    of SA_1 * SA_2 vanishes at SA = 0: seen in a 1-epoch demo run, every fuse_conv weight still 0), so
    "zero" zeroes eq. 6's conv instead: MA = 0, F = f at the start, and every attention parameter learns."""
    model = make("mutual", attention_init="zero", identification_path="pair", test_embedding="mutual_self").train()
    assert all(torch.count_nonzero(ma.conv.weight) == 0 for ma in model.mutual_attention.values())
    assert all(torch.count_nonzero(sa.fuse_conv.weight) > 0 for sa in model.self_attention.values())
    out = run(model, *pair)
    twin = _copy_shared_weights(model, make("baseline", seed=1)).train()
    torch.testing.assert_close(out["emb1"], run(twin, *pair)["emb1"])  # the pair path starts as the backbone
    stuck = _attention_without_gradient(model, pair, steps=2)
    assert stuck[1] == set()
    assert all(torch.count_nonzero(sa.fuse_conv.weight) > 0 for sa in model.self_attention.values())


def test_identification_on_the_pair_path(pair):
    """identification_path="pair": the ID logits come from the mutual-attention embeddings, whose batch
    norms now keep running statistics, and a test image is that path with itself as partner."""
    model = make("mutual", identification_path="pair", test_embedding="mutual_self", dropout=0.0).train()
    running = model.embedding.norm.running_mean.clone()
    out = run(model, *pair)
    assert torch.equal(out["emb1"], out["pair_emb1"]) and torch.equal(out["emb2"], out["pair_emb2"])
    torch.testing.assert_close(out["logits1"], model.classifier(out["emb1"]))
    assert not torch.equal(model.embedding.norm.running_mean, running)
    model.eval()
    x = pair[0]
    with torch.no_grad():
        itself = run(model, x, x)
        torch.testing.assert_close(model.embed(x), itself["pair_emb1"], rtol=1e-4, atol=1e-5)


def test_identification_on_the_pair_path_runs_layer4_once_per_image():
    """The cost of the two readings (docs/model.md, "Cost"): FLOPs of one training step."""
    from reid.models import training_step_flops

    def step_flops(model):
        return training_step_flops(model, *SHAPE[1:], pairs=2)

    base = step_flops(make("baseline"))
    on_pair = step_flops(make("mutual", identification_path="pair", test_embedding="mutual_self"))
    on_single = step_flops(make("mutual"))
    assert on_pair / base < 1.05
    assert on_single / base > 1.15  # layer4 twice: the single-image and the pair path part after layer3


def test_step_flops_leave_the_model_alone_and_scale_with_the_batch():
    from reid.models import training_step_flops

    model = make("mutual").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    two, four = (training_step_flops(model, *SHAPE[1:], pairs=n) for n in (2, 4))
    assert four == 2 * two > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # by hand: ResNet-18's stem convolution alone, forward, is 2 x (7*7*3) x 64 x (32 x 16) x 4 images
    stem = 2 * 7 * 7 * 3 * 64 * (SHAPE[1] // 2) * (SHAPE[2] // 2) * 4
    assert two > 3 * stem  # forward + backward of the whole net is far more than the stem's forward


def test_set_test_embedding_equals_a_model_built_that_way(pair):
    """Extraction with another test embedding (readings ablation): same weights, another single path."""
    trained = make("mutual").eval()
    for mode in ("mutual_self", "plain", "single"):
        built = make("mutual", test_embedding=mode).eval()
        built.load_state_dict(trained.state_dict())
        trained.set_test_embedding(mode)
        torch.testing.assert_close(trained.embed(pair[0]), built.embed(pair[0]))
    assert trained.options.test_embedding == "single"  # still says how it was trained
    with pytest.raises(ValueError, match="one way only"):
        make("baseline").set_test_embedding("plain")
    with pytest.raises(ValueError, match="unknown"):
        trained.set_test_embedding("pairwise")


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = make("mutual", seed=5), make("mutual", seed=5), make("mutual", seed=6)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.mutual_attention["4"].conv.weight, c.mutual_attention["4"].conv.weight)


def test_random_initialisation_warns():
    with pytest.warns(UserWarning, match="randomly initialised"):
        build_model("baseline", CLASSES, backbone="resnet18")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="siamese"), "variant 'siamese'"),
        (dict(backbone="resnet101"), "model.backbone"),
        (dict(attention_layers=[5]), "model.attention_layers"),
        (dict(attention_layers=[3, 3]), "model.attention_layers"),
        (dict(attention_layers=[]), "model.attention_layers is empty"),
        (dict(test_embedding="pair"), "model.test_embedding"),
        (dict(dropout=1.0), "model.dropout"),
        (dict(num_classes=0), "num_classes"),
        (dict(attention_norm="batch"), "model.attention_norm"),
        (dict(attention_init="xavier"), "model.attention_init 'xavier'"),
        (dict(identification_path="both"), "model.identification_path 'both'"),
        (dict(identification_path="pair"), "needs model.test_embedding 'mutual_self'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = dict(variant="mutual", num_classes=CLASSES, backbone="resnet18") | kwargs
    with pytest.raises(ValueError, match=message):
        build_model(args.pop("variant"), args.pop("num_classes"), **args)


def test_pair_variants_need_both_batches(pair):
    with pytest.raises(ValueError, match="needs a pair"):
        make("baseline")(pair[0])
    with pytest.raises(ValueError, match="differ in shape"):
        make("baseline")(pair[0], pair[1][:1])
    assert make("ide")(pair[0]).logits2 is None


def test_activation_maps(pair):
    x, partner = pair
    baseline = make("baseline").eval()
    maps = baseline.activation_maps(x)
    with torch.no_grad():  # independent: run the torchvision stages by hand
        f = run_stem(baseline.backbone, x)
        for stage in (1, 2, 3, 4):
            f = run_stage(baseline.backbone, stage, f)
    assert maps.shape == (2, 2, 1)
    torch.testing.assert_close(maps, f.abs().mean(dim=1))
    with pytest.raises(ValueError, match="mutual variant"):
        baseline.activation_maps(x, partner)
    mutual = make("mutual")
    alone, paired = mutual.activation_maps(x), mutual.activation_maps(x, partner)
    assert alone.shape == paired.shape == (2, 2, 1) and (alone >= 0).all()
    assert not torch.allclose(alone, paired)
    # a finer stage: layer3 of the baseline by hand; of the mutual model, with its layer3 attention
    with torch.no_grad():
        f3 = run_stem(baseline.backbone, x)
        for stage in (1, 2, 3):
            f3 = run_stage(baseline.backbone, stage, f3)
    torch.testing.assert_close(baseline.activation_maps(x, stage=3), f3.abs().mean(dim=1))
    mutual.eval()
    with torch.no_grad():
        g = run_stem(mutual.backbone, x)
        for stage in (1, 2, 3):
            g = run_stage(mutual.backbone, stage, g)
        attended = mutual.self_attention["3"](g).modulate(g)  # F = f * SA + f
    torch.testing.assert_close(mutual.activation_maps(x, stage=3), attended.abs().mean(dim=1))
    assert mutual.activation_maps(x, partner, stage=3).shape == (2, 4, 2)
    with pytest.raises(ValueError, match="stage"):
        mutual.activation_maps(x, stage=5)


def test_channels_last_and_bf16_autocast(pair):
    model = make("mutual").eval()
    x1, x2 = pair
    with torch.no_grad():
        reference = run(model, x1, x2)
        model_cl = model.to(memory_format=torch.channels_last)
        to_cl = dict(memory_format=torch.channels_last)
        cl = run(model_cl, x1.contiguous(**to_cl), x2.contiguous(**to_cl))
        torch.testing.assert_close(cl["verif_logits"], reference["verif_logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cl["emb1"], reference["emb1"], rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x1, x2)
    losses = pair_loss(out, torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 0]))
    losses["total"].backward()
    assert torch.isfinite(losses["total"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_overfits_a_tiny_batch():
    """6 pairs of 3 identities (noisy copies of one template each): both heads must fit them.

    Dropout is off so that a dozen steps suffice. With attention_norm="none" this toy batch
    collapses the pair features (see reid/models/attention.py): the reason rms is the default.
    """
    model = make("mutual", dropout=0.0).train()
    generator = torch.Generator().manual_seed(9)
    templates = torch.randn(3, *SHAPE, generator=generator)
    pid = torch.tensor([0, 0, 1, 1, 2, 2])
    x = templates[pid] + 0.5 * torch.randn(6, *SHAPE, generator=generator)
    first, second = torch.tensor([0, 2, 4, 0, 2, 4]), torch.tensor([1, 3, 5, 3, 5, 1])
    pid1, pid2 = pid[first], pid[second]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(12):
        losses = pair_loss(model(x[first], x[second]), pid1, pid2, pid1 == pid2)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert history[-1]["id_acc"] == 1.0 and history[-1]["verif_acc"] == 1.0, history[-1]
    assert history[-1]["total"] < 0.05 < history[0]["total"] / 10, (history[0], history[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_returns_the_typed_output_and_pair_features_the_embeddings_its_heads_saw(variant, pair):
    from reid.models import PairOutput

    model = make(variant).eval()
    with torch.no_grad():
        out = run(model, *pair)
        features = model.pair_features(*pair)
        typed = model(*pair)
    assert isinstance(typed, PairOutput) and PairOutput._fields == ("logits1", "logits2", "verif_logits")
    assert torch.equal(features.identity, torch.cat([out["emb1"], out["emb2"]]))
    if variant == "ide":
        assert features.pair is None and typed.verif_logits is None
    else:
        assert torch.equal(features.pair, torch.cat([out["pair_emb1"], out["pair_emb2"]]))
