"""One way to record and rebuild a model: the builder in model.pt's meta, also for files that hold model_kwargs."""

import warnings
from dataclasses import fields

import pytest
import torch

from reid.config import section_schema
from reid.files import DamagedFileError, load_model_file
from reid.models import build_model
from reid.models.options import WEIGHTS_KEYS, ModelOptions
from reid.models.runtime import load_trained_model
from reid.typed_config import ModelConfig
from reid.variants import PAPER_BUILDER


def legacy_model_file(path, variant, **options):
    """model.pt exactly as reid train wrote it before every model was recorded by its builder: the paper's
    variants kept ReIDModel's keyword arguments under meta["model_kwargs"]."""
    kwargs = {**dict(variant=variant, num_classes=4, backbone="resnet18", embedding_dim=8, dropout=0.5,
                     attention_layers=[3, 4], test_embedding="single", attention_norm="rms", attention_init="kaiming",
                     verification_norm="batchnorm", identification_path="single"), **options}
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(**kwargs, pretrained=None).eval()
    torch.save({"state_dict": model.state_dict(),
                "meta": {"model_kwargs": kwargs, "height": 32, "width": 16, "dataset": "tiny", "variant": variant,
                         "seed": 0, "config_hash": "abc", "precision": "fp32", "label_to_pid": {0: 1, 1: 2}}}, path)
    return model


@pytest.mark.parametrize("variant,options", [("ide", {}), ("baseline", {}), ("self_attention", {}),
                                             ("mutual", {"test_embedding": "mutual_self"})])
def test_a_model_file_with_model_kwargs_is_rebuilt_through_the_builder(tmp_path, variant, options):
    saved = legacy_model_file(tmp_path / "model.pt", variant, **options)
    assert "builder" not in load_model_file(tmp_path / "model.pt")["meta"]  # the file's reader changes nothing
    model, meta = load_trained_model(tmp_path / "model.pt")
    assert meta["builder"]["entry"] == PAPER_BUILDER and meta["builder"]["args"] == {"variant": variant}
    assert model.options == ModelOptions(backbone="resnet18", embedding_dim=8, dropout=0.5, **options)
    x = torch.randn(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.embed(x), saved.embed(x))


def test_an_older_file_without_the_later_options_takes_their_defaults(tmp_path):
    saved = legacy_model_file(tmp_path / "model.pt", "mutual")
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    for key in ("attention_norm", "attention_init", "verification_norm", "identification_path"):
        del blob["meta"]["model_kwargs"][key]
    torch.save(blob, tmp_path / "old.pt")
    model, _ = load_trained_model(tmp_path / "old.pt")
    assert model.options == saved.options


def test_model_kwargs_this_code_cannot_build_name_the_file(tmp_path):
    legacy_model_file(tmp_path / "model.pt", "baseline")
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    blob["meta"]["model_kwargs"]["attention_heads"] = 2
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(DamagedFileError, match=r"bad.pt.*model_kwargs does not fit"):
        load_trained_model(tmp_path / "bad.pt")


def test_the_model_options_are_the_schema_model_section_with_its_defaults():
    node, _ = section_schema("model")
    properties = node["properties"]
    assert set(ModelOptions.names()) | set(WEIGHTS_KEYS) == set(properties)
    defaults = {name: properties[name]["default"] for name in ModelOptions.names()}
    assert ModelOptions(**defaults) == ModelOptions()
    assert set(ModelOptions.names()) | set(WEIGHTS_KEYS) == {f.name for f in fields(ModelConfig)}
    section = ModelConfig.from_dict({"backbone": "resnet18", "embedding_dim": 8}).as_dict()
    assert ModelOptions.from_config(section) == ModelOptions(backbone="resnet18", embedding_dim=8)
