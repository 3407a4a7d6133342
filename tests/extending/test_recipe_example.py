"""docs/extending.md's worked training recipe from outside ``reid/`` (tests/extending/reid_recipe_example.py):
registered by a plug-in, checked with the configuration, trained and resumed by the training stage,
rebuilt from its model file as extraction does."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@pytest.fixture
def plugin(monkeypatch):
    """The plug-in imported as the pipeline imports it; its registrations undone afterwards."""
    monkeypatch.syspath_prepend(str(HERE))
    from reid import plugins, recipes, variants

    before = dict(variants.REGISTRY), dict(recipes.REGISTRY)
    plugins.load(["reid_recipe_example"], {}, "test")
    yield sys.modules["reid_recipe_example"]
    for registry, saved in zip((variants.REGISTRY, recipes.REGISTRY), before):
        registry.clear()
        registry.update(saved)
    sys.modules.pop("reid_recipe_example", None)


def test_the_plugin_recipe_is_registered_and_a_config_may_use_it(plugin):
    from reid import recipes, variants
    from reid.config import ConfigError
    from reid.config_checks import load, validate

    assert recipes.get("pk_softmax").entry == "reid_recipe_example:plan"
    assert variants.get_variant("tiny_pk").recipe == "pk_softmax"

    config = load(Path(__file__).resolve().parents[2] / "config.yaml")
    validate({**config, "plugins": ["reid_recipe_example"], "models": ["tiny_pk"]})
    variants.register(variants.Variant("tiny_unknown_recipe", "x", "x", None, "none", False, ("single",),
                                       "reid_recipe_example:build_tiny", recipe="no_such_recipe"))
    with pytest.raises(ConfigError, match="trained by recipe 'no_such_recipe', which is not registered"):
        validate({**config, "models": ["tiny_unknown_recipe"]})


def test_the_plugin_recipe_trains_through_the_stage_and_its_model_file_rebuilds(plugin, tmp_path, tiny_dataset):
    from reid import tracking
    from reid.models.runtime import load_trained_model
    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    root, mean = tiny_dataset
    outputs = TrainOutputs(tmp_path / "model.pt", tmp_path / "history.csv", tmp_path / "run.json")
    history = train(data_root=root, mean_image=mean, dataset="tiny", variant="tiny_pk", seed=0,
                    model_cfg=ModelConfig.from_dict({"embedding_dim": 8}),
                    train_cfg=TrainConfig.from_dict({"height": 32, "width": 16, "epochs": 2, "lr_step": 1,
                                                     "device": "cpu"}),
                    tracker=tracking.NullTracker(), outputs=outputs, checkpoint_dir=tmp_path / "ckpt")
    assert [r["epoch"] for r in history] == [1, 2] and history[1]["lr"] == pytest.approx(history[0]["lr"] * 0.1)
    rows = list(csv.DictReader(open(outputs.history)))
    assert list(rows[0]) == ["epoch", "lr", "loss_total", "loss_id", "acc_id", "images_per_s", "seconds"]
    model, meta = load_trained_model(outputs.model)
    assert meta["builder"]["entry"] == "reid_recipe_example:build_tiny"
    assert model.embed(torch.zeros(3, 3, 32, 16)).shape == (3, 8)
