"""The model-variant registry (reid.variants) is the single source of a variant's identity; plug-ins and
custom models (reid.plugins) register through it; a custom model is checked against its interface
(reid.models.custom) with errors that name its builder."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from reid import plugins, variants
from reid.config import ConfigError
from reid.config_checks import validate
from reid.models import TEST_EMBEDDINGS, VARIANTS, build_model
from reid.models.builder import rebuild
from reid.models.custom import CustomModelError, check_embedding, check_pair_output
from reid.variants import REGISTRY, Variant, get_variant, register

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture
def registry():
    """The registry as it was before the test (tests register variants of their own)."""
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


# ------------------------------------------------------------------------ one source of each fact

def _project_files():
    for pattern in ("reid/**/*.py", "workflow/**/*.smk", "workflow/**/*.yaml", "Snakefile", "config.yaml",
                    "benchmarks/*.py"):
        yield from (p for p in ROOT.glob(pattern) if p.name != "variants.py")


def test_labels_colours_and_name_lists_live_in_the_registry_only():
    facts = [v.label for v in variants.BUILTIN] + [v.colour for v in variants.BUILTIN]
    facts += [f'"{v.short_label}"' for v in variants.BUILTIN if v.short_label != v.name]
    lists = re.compile(r"ide\W+baseline\W+self_attention\W+mutual")  # the four names spelt out together
    offenders = []
    for path in _project_files():
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {fact}" for fact in facts if fact in text]
        for match in lists.finditer(text):
            line = text[:match.start()].count("\n") + 1
            context = text.splitlines()[line - 1]
            if "description" not in context and "#" not in context:  # the schema's and config's prose
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {context.strip()}")
    assert not offenders, offenders


def test_schema_lists_the_builtins_and_the_config_check_enforces_the_registry(registry):
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    models = schema["properties"]["models"]
    assert "enum" not in models["items"]  # plug-ins and custom_models add names after the schema is read
    listed = re.search(r"the built-ins ([a-z_, ]+) \(", models["description"]).group(1).split(", ")
    assert listed == [v.name for v in variants.BUILTIN]
    config = copy.deepcopy(CONFIG)
    config["models"] = ["baseline", "mutal"]
    with pytest.raises(ConfigError, match=r"models\[1\]: unknown model variant 'mutal'; known: ide, baseline, "
                                          r"self_attention, mutual, bot, bot_self_attention\. Define it under custom_models"):
        validate(config)
    config["custom_models"] = {"mutal": {"entry": "some.module:build", "label": "My net"}}
    validate(config)  # now a custom model
    assert get_variant("mutal").label_for("resnet18") == "My net" and get_variant("mutal").colour


def test_snakefile_wildcard_comes_from_the_registry(registry):
    text = (ROOT / "Snakefile").read_text()
    assert re.search(r"^\s+model=variants\.wildcard_pattern\(\),", text, re.M)
    assert variants.wildcard_pattern() == "ide|baseline|self_attention|mutual|bot|bot_self_attention"
    register(Variant("my_net", "My net", "my net", None, None, None, ("single",), "x.y:build"))
    pattern = variants.wildcard_pattern()
    assert re.fullmatch(pattern, "my_net") and not re.fullmatch(pattern, "my_net2")


def test_the_paper_model_follows_the_registry():
    assert VARIANTS == tuple(v.name for v in variants.BUILTIN if v.builtin)  # the paper's: bot has its own model
    assert get_variant("mutual").test_embeddings == TEST_EMBEDDINGS
    for v in (v for v in variants.BUILTIN if v.builtin):
        model = build_model(v.name, 3, backbone="resnet18", embedding_dim=8, pretrained=None)
        assert (model.verifier is not None) == v.verifier, v.name
        assert bool(model.self_attention) == v.has_attention and bool(model.mutual_attention) == (v.attention == "mutual")
    built = get_variant("baseline").build(3, {"model": {**CONFIG["model"], "embedding_dim": 8}})
    assert built.variant == "baseline" and built.options.embedding_dim == 8


def test_tables_use_the_registry_labels():
    from reid.report.tables import model_label

    assert model_label("mutual", "resnet50") == "ResNet-50 + mutual attention"
    assert model_label("ide", "resnet18") == "ResNet-18 IDE (identification loss only)"
    with pytest.raises(ValueError, match="model variant 'nope' is unknown; choose one of ide, baseline"):
        model_label("nope", "resnet18")


# ------------------------------------------------------------------------ registering

def test_register_twice_is_a_noop_and_a_clash_is_refused(registry):
    a = register(Variant("net_a", "A", "a", None, None, None, ("single",), "pkg.mod:build_a"))
    b = register(Variant("net_b", "B", "b", None, None, None, ("single",), "pkg.mod:build_b"))
    assert (a.colour, b.colour) == variants.EXTRA_COLOURS[:2]  # distinct, in registration order
    assert register(Variant("net_a", "A", "a", None, None, None, ("single",), "pkg.mod:build_a")) is a
    with pytest.raises(ValueError, match="'net_a' is already registered .builder pkg.mod:build_a"):
        register(Variant("net_a", "A", "a", None, None, None, ("single",), "pkg.mod:other"))
    with pytest.raises(ValueError, match="'mutual' is already registered .a built-in"):
        register(Variant("mutual", "M", "m", None, None, None, ("single",), "pkg.mod:build_a"))
    assert variants.names()[-2:] == ("net_a", "net_b") and variants.names().index("net_b") == len(variants.BUILTIN) + 1  # after the package's


def test_custom_models_errors_name_the_key(registry):
    config = copy.deepcopy(CONFIG)
    config["custom_models"] = {"baseline": {"entry": "pkg.mod:build"}}
    with pytest.raises(ConfigError, match="custom_models.baseline: the name is taken by a built-in variant"):
        validate(config)
    config["custom_models"] = {"mine": {"entry": "pkg.mod"}}
    with pytest.raises(ConfigError, match=r"custom_models.mine.entry: .* does not match"):
        validate(config)
    config["custom_models"] = {}
    config["plugins"] = ["no_such_plugin_module"]
    with pytest.raises(ConfigError, match=r"plugins\[0\]: cannot import module 'no_such_plugin_module'"):
        validate(config)


def test_the_environment_carries_plugins_and_custom_models(registry, tmp_path, monkeypatch):
    (tmp_path / "env_plugin.py").write_text(
        "from reid.variants import Variant, register\n"
        "register(Variant('env_net', 'Env net', 'env', None, 'none', False, ('single',), 'env_plugin:build'))\n")
    monkeypatch.chdir(tmp_path)  # a module in the working directory is found, as `python -m` finds it
    config = {"plugins": ["env_plugin"], "custom_models": {"mine": {"entry": "pkg.mod:build", "label": "Mine"}}}
    env = plugins.environment(config)
    assert json.loads(env[plugins.ENV_VAR]) == config and plugins.environment({"plugins": []}) == {}
    plugins.load_from_environment(env)
    assert get_variant("env_net").attention == "none" and get_variant("mine").short_label == "Mine"
    with pytest.raises(ValueError, match="environment variable REID_PLUGINS: not valid JSON"):
        plugins.load_from_environment({plugins.ENV_VAR: "{"})


# ------------------------------------------------------------------------ the custom-model interface

def test_pair_output_and_embedding_checks_name_the_entry():
    logits = torch.zeros(4, 7)
    check_pair_output({"logits1": logits, "logits2": logits}, 4, 7, "m:f")  # no verifier: fine
    check_pair_output({"logits1": logits, "logits2": logits, "verif_logits": None}, 4, 7, "m:f")
    with pytest.raises(CustomModelError, match=r"m:f: forward\(x1, x2\) returned tuple, expected a dict"):
        check_pair_output((logits, logits), 4, 7, "m:f")
    with pytest.raises(CustomModelError, match=r"m:f: forward\(x1, x2\)\['logits2'\] is missing"):
        check_pair_output({"logits1": logits}, 4, 7, "m:f")
    with pytest.raises(CustomModelError, match=r"\['logits1'\] has shape \(4, 6\), expected \(4, 7\) \(num_classes\)"):
        check_pair_output({"logits1": torch.zeros(4, 6), "logits2": logits}, 4, 7, "m:f")
    with pytest.raises(CustomModelError, match=r"\['verif_logits'\] has shape \(4, 1\), expected \(4, 2\)"):
        check_pair_output({"logits1": logits, "logits2": logits, "verif_logits": torch.zeros(4, 1)}, 4, 7, "m:f")
    check_embedding(torch.zeros(3, 5), 3, "m:f")
    with pytest.raises(CustomModelError, match=r"m:f: embed\(x\) returned \(3, 5, 1\), expected a floating-point"):
        check_embedding(torch.zeros(3, 5, 1), 3, "m:f")


def test_rebuild_names_the_entry_that_cannot_be_imported_or_returns_the_wrong_thing(tmp_path, monkeypatch):
    meta = {"entry": "no_such_module_xyz:build", "num_classes": 3, "config": {}}
    with pytest.raises(ImportError, match=r"model.pt: the model's builder: cannot import module "
                                          r"'no_such_module_xyz' of 'no_such_module_xyz:build'"):
        rebuild(meta, "model.pt")
    (tmp_path / "bad_builders.py").write_text(
        "import torch\n"
        "def not_a_module(num_classes, config):\n    return 3\n"
        "def no_embed(num_classes, config):\n    return torch.nn.Linear(2, num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="module 'bad_builders' has no callable 'missing'"):
        rebuild({**meta, "entry": "bad_builders:missing"}, "model.pt")
    with pytest.raises(CustomModelError, match="bad_builders:not_a_module returned int, not a torch.nn.Module"):
        rebuild({**meta, "entry": "bad_builders:not_a_module"}, "model.pt")
    with pytest.raises(CustomModelError, match=r"bad_builders:no_embed: the model Linear has no embed\(x\)"):
        rebuild({**meta, "entry": "bad_builders:no_embed"}, "model.pt")
