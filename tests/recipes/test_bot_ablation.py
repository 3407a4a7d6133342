"""The strong baseline's own ablation (reid.readings.BOT_READINGS, results/tables/readings_bot.md) and
the paper's self-attention on the strong baseline (variant bot_self_attention, reid.models.bot)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from reid import readings as R
from reid.models.attention import SelfAttention
from reid.models.backbone import run_stage, run_stem
from reid.models.bot import BotModel
from reid.typed_config import BotConfig, ModelConfig
from reid.variants import get_variant

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the model

def test_self_attention_on_the_strong_baseline_is_f_times_sa_plus_f_after_each_configured_stage():
    torch.manual_seed(0)
    model = BotModel(5, backbone="resnet18", attention="self", attention_layers=(3, 4), attention_init="kaiming")
    assert sorted(model.self_attention) == ["3", "4"] and model.attention_layers == (3, 4)
    x = torch.randn(2, 3, 64, 32)
    model.eval()
    with torch.no_grad():  # by hand: stem, stages 1-3, then eqs. 1-4 and F = f * SA + f (docs/model.md)
        f = run_stem(model.backbone, x)
        for stage in (1, 2, 3):
            f = run_stage(model.backbone, stage, f)
        block = model.self_attention["3"]
        assert isinstance(block, SelfAttention)
        sa = block(f).dense()
        want = (f * sa + f).abs().mean(dim=1)
    assert torch.allclose(model.activation_maps(x, stage=3), want, atol=1e-5)
    plain = BotModel(5, backbone="resnet18")
    plain.load_state_dict(model.state_dict(), strict=False)
    assert not torch.allclose(plain.activation_maps(x, stage=3), want, atol=1e-3)  # the attention changes F


def test_zero_initialised_attention_starts_as_the_strong_baseline_and_learns():
    torch.manual_seed(0)
    bot = BotModel(5, backbone="resnet18")
    sa = BotModel(5, backbone="resnet18", attention="self", attention_init="zero")
    missing, unexpected = sa.load_state_dict(bot.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("self_attention.") for k in missing)
    x = torch.randn(8, 3, 32, 16)
    assert torch.equal(sa.embed(x), bot.embed(x))  # SA = 0: F = f
    out = sa(x)
    torch.nn.functional.cross_entropy(out["logits"], torch.arange(8) % 5).backward()
    grads = [p.grad for n, p in sa.named_parameters() if n.startswith("self_attention.") and "fuse_conv.weight" in n]
    assert len(grads) == 2 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_bot_self_attention_exports_to_onnx_with_the_pipelines_features():
    from reid import export_onnx

    torch.manual_seed(0)
    model = BotModel(5, backbone="resnet18", attention="self", attention_init="kaiming").eval()  # SA not zero
    images = torch.randn(4, 3, 32, 16, generator=torch.Generator().manual_seed(1))
    _, worst = export_onnx.export_model(model, images, {"variant": "bot_self_attention"}, "variant bot_self_attention")
    assert 0 <= worst <= export_onnx.PARITY_TOLERANCE  # the largest difference export_model measured


def test_bad_attention_settings_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.attention_layers must be distinct stages"):
        BotModel(3, backbone="resnet18", attention="self", attention_layers=())
    with pytest.raises(ValueError, match="model.attention_norm 'bogus' is unknown"):
        BotModel(3, backbone="resnet18", attention="self", attention_norm="bogus")
    with pytest.raises(ValueError, match="attention 'mutual' is unknown"):
        BotModel(3, backbone="resnet18", attention="mutual")


def test_bot_self_attention_trains_by_the_bot_recipe_and_its_model_file_rebuilds(tmp_path, tiny_dataset):
    from reid import tracking
    from reid.models.runtime import load_trained_model
    from reid.train import TrainOutputs, train
    from reid.typed_config import TrainConfig

    root, mean = tiny_dataset
    out = TrainOutputs(tmp_path / "model.pt", tmp_path / "history.csv", tmp_path / "run.json")
    bot = {"height": 32, "width": 16, "padding": 2, "epochs": 2, "identities_per_batch": 3, "images_per_identity": 2,
           "warmup_epochs": 1, "lr_milestones": [2]}
    history = train(data_root=root, mean_image=mean, dataset="tiny", variant="bot_self_attention", seed=0,
                    model_cfg=ModelConfig.from_dict({"backbone": "resnet18", "attention_layers": [4]}),
                    train_cfg=TrainConfig.from_dict({"device": "cpu"}), recipe_cfg=BotConfig.from_dict(bot),
                    tracker=tracking.NullTracker(), outputs=out, checkpoint_dir=tmp_path / "ckpt")
    assert len(history) == 2 and all(row["loss_triplet"] >= 0 for row in history)
    model, meta = load_trained_model(out.model)
    assert meta["variant"] == "bot_self_attention" and meta["builder"]["args"] == {"attention": "self"}
    assert model.attention_layers == (4,) and sorted(model.self_attention) == ["4"]
    saved = torch.load(out.model, weights_only=False)["state_dict"]
    assert any(k.startswith("self_attention.4.") for k in saved)
    assert model.embed(torch.zeros(2, 3, 32, 16)).shape == (2, 512)
    # extraction as the readings' rule asks for it: --test-embedding single is the one way it embeds
    from reid.features import load_embedding_model

    embedder, _ = load_embedding_model(out.model, torch.device("cpu"), "single")
    assert embedder.embed(torch.zeros(1, 3, 32, 16)).shape == (1, 512)
    with pytest.raises(ValueError, match=r"embeds test images one way only \('single'\); --test-embedding 'plain'"):
        load_embedding_model(out.model, torch.device("cpu"), "plain")


# ---------------------------------------------------------------- the ablation's definition

def demo_sections() -> tuple[dict, dict]:
    """config.yaml's model: and bot: sections, completed by the schema (the demo's settings)."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    return ModelConfig.from_dict(cfg["model"]).as_dict(), BotConfig.from_dict(cfg["bot"]).as_dict()


def test_every_bot_reading_is_one_trick_away_from_bot_and_builds():
    model_cfg, bot_cfg = demo_sections()
    names = [r.name for r in R.ALL_READINGS]
    assert len(set(names)) == len(names)  # one wildcard value, one reading, across both ablations
    ablation = R.ablation("bot")
    assert ablation.readings == R.BOT_READINGS and ablation.baseline == "bot" and ablation.table == "readings_bot"
    assert R.ablation_of_table("readings_bot") is ablation and R.ablation_of_table("readings").readings == R.READINGS
    x = torch.randn(4, 3, bot_cfg["height"], bot_cfg["width"])
    for reading in R.BOT_READINGS:
        spec = get_variant(reading.variant)
        assert spec.recipe == "bot" and reading.reference == "bot" and reading.trains
        assert not reading.model_overrides and not reading.train_overrides  # the recipe reads bot: alone
        section = reading.recipe_config("bot", bot_cfg)
        BotConfig.from_dict(section)  # every override a valid value of its key
        changed = [k for k in bot_cfg if section[k] != bot_cfg[k]] + ([spec.name] if spec.name != "bot" else [])
        assert len(changed) == (0 if reading.name == "bot" else 1), (reading.name, changed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no ImageNet weights in the demo
            model = spec.build(5, {"model": model_cfg, "bot": section})
        out = model(x)
        assert out["logits"].shape == (4, 5) and model.embed(x).shape[0] == 4
    with pytest.raises(ValueError, match="overrides unknown bot key"):
        R.Reading("typo", "bot", "typo", recipe_overrides={"random_erasure": 0.0}).recipe_config("bot", bot_cfg)
    with pytest.raises(ValueError, match="ablation 'tricks' is unknown; choose one of paper, bot"):
        R.ablation("tricks")


# ---------------------------------------------------------------- the table

HITS = {"bot": 6, "bot_no_warmup": 6, "bot_no_erasing": 4, "bot_no_label_smoothing": 5, "bot_last_stride2": 5,
        "bot_no_bnneck": 3, "bot_no_center": 6, "bot_self_attention": 7}


def write_bot_runs(results: Path, dataset="tiny", seed=0):
    """Each bot reading's metrics.json, per_query.csv (10 queries), model.pt (its builder) and history.csv."""
    from reid.metrics import uncertainty as U
    from reid.models.builder import builder_meta

    model_cfg, bot_cfg = demo_sections()
    model_cfg["backbone"] = "resnet18"
    for reading in R.BOT_READINGS:
        folder = results / dataset / "readings" / reading.name / f"seed{seed}"
        (folder / "single").mkdir(parents=True)
        fmr = [1] * HITS[reading.name] + [3] * (10 - HITS[reading.name])
        ap = [1.0 / r for r in fmr]
        table = U.per_query_table({"single": {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap, "inp": ap}},
                                  [f"query/{i:04d}.jpg" for i in range(10)], [i // 2 + 1 for i in range(10)], [1] * 10)
        (folder / "single" / "per_query.csv").write_text(U.per_query_csv(table))
        record = {"dataset": dataset, "model": reading.variant, "seed": seed, "mlflow_run_id": f"run-{reading.name}",
                  "flip_test": True, **U.estimates(table)}
        (folder / "single" / "metrics.json").write_text(json.dumps(record))
        config = {"model": model_cfg, "train": {}, "bot": reading.recipe_config("bot", bot_cfg)}
        meta = {"variant": reading.variant, "height": 32, "width": 16,
                "builder": builder_meta(get_variant(reading.variant), 5, config)}
        torch.save({"state_dict": {}, "meta": meta}, folder / "model.pt")
        with open(folder / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "images_per_s", "seconds"])
            w.writeheader()
            w.writerow({"epoch": 1, "images_per_s": 100.0, "seconds": 10.0})


def test_the_bot_ablation_table_compares_each_trick_with_bot(tmp_path):
    from reid.report.paper import describe_dataset
    from reid.report.readings import readings_table

    write_bot_runs(tmp_path)
    doc = readings_table(tmp_path, "tiny", [0], describe_dataset("tiny", {"source": "synthetic"}),
                         bootstrap={"resamples": 500, "seed": 0}, ablation="bot")
    df = doc.table
    assert len(df) == len(R.BOT_READINGS) == 8
    rows = {r.split("`")[1]: i for i, r in enumerate(df["Reading"])}
    assert set(rows) == set(HITS)
    assert df["Δ Rank-1 vs reference (pp)"][rows["bot"]] == "(reference)"
    assert set(df["Reference"]) == {"`bot`"}
    assert df["Rank-1 (%)"][rows["bot_no_bnneck"]].startswith("30.00 [")
    assert df["Δ Rank-1 vs reference (pp)"][rows["bot_no_bnneck"]].startswith("−30.00 [")
    assert df["Δ Rank-1 vs reference (pp)"][rows["bot_self_attention"]].startswith("+10.00 [")
    flops = {k: float(df["FLOPs / step (× bot)"][i]) for k, i in rows.items()}
    # last stride 2 quarters layer4's map; self-attention adds its convolutions; a loss weight adds nothing
    assert flops["bot_last_stride2"] < 0.9 and flops["bot_self_attention"] > 1.0
    assert flops["bot_no_erasing"] == flops["bot_no_center"] == flops["bot"] == 1.0
    assert set(df["time / image (× bot)"]) == {"1.00"}
    md = doc.to_markdown()
    assert "The strong baseline's tricks" in md and "run-bot_self_attention" in md
