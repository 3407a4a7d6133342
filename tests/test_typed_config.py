"""The typed configuration (reid.typed_config): built once, defaults from the schema only, rules once."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from reid import config as config_module
from reid.config import ConfigError, config_hash, load_schema, result_keys
from reid.config_checks import from_config, validate
from reid.typed_config import SECTION_CLASSES, Config, DatasetSpec, ModelConfig, RerankConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def demo() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("cls", SECTION_CLASSES, ids=lambda c: c.__name__)
def test_every_schema_key_is_one_field_and_every_field_a_schema_key(cls):
    keys = {f.metadata.get("key", f.name) for f in dataclasses.fields(cls)}
    schema = cls.schema_keys()
    assert not schema - keys, f"{cls.SECTION}: schema keys without a field in {cls.__name__}: {schema - keys}"
    assert not keys - schema, f"{cls.SECTION}: fields of {cls.__name__} the schema does not have: {keys - schema}"


def test_every_top_level_schema_key_is_a_field_of_config():
    assert {f.name for f in dataclasses.fields(Config)} == set(load_schema()["properties"])


def test_the_demo_config_builds_frozen_typed_sections():
    cfg = from_config(demo(), "config.yaml")
    assert cfg.models == ("baseline", "mutual") and cfg.seeds == (0,)
    assert cfg.model.backbone == "resnet18" and cfg.model.attention_layers == (3, 4)
    assert cfg.evaluate.rerank == RerankConfig(k1=20, k2=6, lambda_value=0.3)
    assert cfg.evaluate.bootstrap.resamples == 10000
    assert isinstance(cfg.dataset["synthetic"], DatasetSpec) and cfg.dataset["synthetic"].kind is None
    assert cfg.synthetic.difficulty["family_changes"] == (2, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0
    with pytest.raises(TypeError):
        cfg.dataset["other"] = cfg.dataset["synthetic"]


def test_as_dict_gives_each_section_back_as_the_schema_completes_it():
    """Exactly the validated section (what is hashed); a key unset and without a default reads None."""
    validated = validate(demo())
    cfg = from_config(demo())
    for name, cls in Config.SECTIONS.items():
        if name != "report":  # report: resolved against `datasets` (next test)
            assert getattr(cfg, name).as_dict() == {**dict.fromkeys(cls.schema_keys()), **validated[name]}, name
    assert cfg.model.as_dict() == validated["model"] and cfg.train.as_dict() == validated["train"]
    assert cfg.evaluate.rerank.as_dict() == {"k1": 20, "k2": 6, "lambda": 0.3}


def test_report_keys_unset_and_null_mean_different_things():
    cfg = demo()
    cfg["datasets"] = ["synthetic", "other"]
    cfg["dataset"]["other"] = {"source": "synthetic"}
    cfg["report"] = {"table2_dataset": None, "table3_dataset": "other"}
    report = from_config(cfg).report
    assert report.table1_datasets == ("synthetic", "other")  # unset: every configured dataset
    assert report.table2_dataset is None  # null: not built
    assert report.table3_dataset == "other" and report.readings_dataset == "synthetic"  # unset: the first
    cfg["report"] = {"table1_datasets": None}
    report = from_config(cfg).report
    assert report.table1_datasets == () and report.table2_dataset == "synthetic"


def test_defaults_come_from_the_schema_alone(monkeypatch):
    """Change a default in the schema: the typed sections follow it."""
    schema = load_schema()
    changed = copy.deepcopy(schema)
    changed["properties"]["train"]["properties"]["lr"]["default"] = 0.123
    changed["properties"]["model"]["properties"]["embedding_dim"]["default"] = 8
    monkeypatch.setattr(config_module, "load_schema", lambda: copy.deepcopy(changed))
    assert TrainConfig.from_dict({}).lr == 0.123
    assert ModelConfig.from_dict({}).embedding_dim == 8
    assert ModelConfig.from_dict({}).dropout == schema["properties"]["model"]["properties"]["dropout"]["default"]


def test_a_misspelt_key_in_a_section_is_named():
    with pytest.raises(ConfigError, match=r"backbon: unexpected key"):
        ModelConfig.from_dict({"backbon": "resnet18"}, "--model-params")


def test_pair_identification_needs_mutual_self_named():
    cfg = demo()
    cfg["model"]["identification_path"] = "pair"
    message = "model.identification_path 'pair' needs model.test_embedding 'mutual_self'"
    with pytest.raises(ConfigError, match=f"config.yaml: {message}"):
        from_config(cfg, "config.yaml")
    cfg["models"] = ["baseline"]  # only the mutual model has the pair path
    from_config(cfg)
    cfg["models"] = ["mutual"]
    cfg["model"]["test_embedding"] = "mutual_self"
    assert from_config(cfg).model.identification_path == "pair"


def test_an_undefined_dataset_is_named():
    cfg = demo()
    cfg["report"]["table2_dataset"] = "dukemtmcreid"
    with pytest.raises(ConfigError, match="dataset 'dukemtmcreid' is used but not defined"):
        from_config(cfg)


# The demo config's result hashes, as model.pt / features.pt / MLflow carry them (the code before the
# typed config was introduced gave the same, on the demo's results): a change would silently re-key
# every result, so it must be deliberate.
DEMO_HASHES = {"baseline": "332f6639c149", "mutual": "0dbb734b24a6"}


@pytest.mark.parametrize("variant", sorted(DEMO_HASHES))
def test_the_demo_config_hash_is_pinned(variant):
    cfg = from_config(demo())
    chash = config_hash("synthetic", variant, 0, result_keys(cfg.model.as_dict(), "model"),
                        result_keys(cfg.train.as_dict(), "train"))
    assert chash == DEMO_HASHES[variant]


def test_a_reading_key_re_keys_results_only_away_from_its_neutral_default():
    """Issue 22's keys: at the value that reproduces the older code they leave the hash as it was
    (DEMO_HASHES above); any other value is a result key like every other."""
    from reid.config import NEUTRAL_DEFAULTS

    def chash(cfg):
        return config_hash("synthetic", "baseline", 0, result_keys(cfg.model.as_dict(), "model"),
                           result_keys(cfg.train.as_dict(), "train"))

    base = chash(from_config(demo()))
    assert base == DEMO_HASHES["baseline"]
    for path, neutral in NEUTRAL_DEFAULTS.items():
        section, key = path.split(".")
        cfg = demo()
        assert cfg[section][key] == neutral, path  # config.yaml spells out the neutral value
        other = {"train.lr_decay": "gradual", "train.input_norm": "mean", "train.mean_image_size": "input",
                 "train.positive_pairs": "random", "model.embedding_norm": "none",
                 "model.verification_feature": "absolute", "model.verification_head": "sequential",
                 "model.attention_channels": "shared", "evaluate.feature_norm": "none"}[path]
        cfg[section][key] = other
        if section != "evaluate":  # the extraction's keys are not in the training hash
            assert chash(from_config(cfg)) != base, path
        assert result_keys(cfg)[section][key] == other  # what the rules pass as params: reruns the job
    cfg = demo()
    cfg["train"]["lr_decay_epochs"] = 7  # ignored by the step decay: no new key
    assert chash(from_config(cfg)) == base
    cfg["train"]["lr_decay"] = "gradual"
    gradual = chash(from_config(cfg))
    cfg["train"]["lr_decay_epochs"] = 8
    assert chash(from_config(cfg)) != gradual
