import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reid.config import ConfigError, config_hash
from reid.config_checks import load, validate

ROOT = Path(__file__).resolve().parent.parent


def base():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled():
    cfg = load(ROOT / "config.yaml")
    assert cfg["model"]["backbone"] == "resnet18"
    assert cfg["evaluate"]["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3}


def test_misspelt_key_is_rejected_by_name():
    cfg = base()
    cfg["train"]["epohcs"] = 3
    with pytest.raises(ConfigError, match="epohcs"):
        validate(cfg)


def test_wrong_type_is_rejected_naming_the_key():
    cfg = base()
    cfg["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"train\.lr"):
        validate(cfg)


def test_undefined_dataset_is_rejected():
    cfg = base()
    cfg["datasets"] = ["market1501"]
    with pytest.raises(ConfigError, match="market1501"):
        validate(cfg)


def test_identification_on_the_pair_path_needs_the_mutual_self_test_embedding():
    from reid.config_checks import check_references

    cfg = validate(base())
    cfg["model"]["identification_path"] = "pair"
    with pytest.raises(ConfigError, match="model.identification_path 'pair' needs model.test_embedding 'mutual_self'"):
        check_references(cfg)
    cfg["model"]["test_embedding"] = "mutual_self"
    check_references(cfg)


def test_paper_preset_merges_into_a_valid_config():
    cfg = base()
    preset = yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text())
    for k, v in preset.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    validate(cfg)
    assert cfg["model"]["backbone"] == "resnet50"
    assert (cfg["train"]["height"], cfg["train"]["width"]) == (256, 188)
    assert cfg["train"]["lr_step"] == 40 and cfg["train"]["epochs"] == 60
    assert cfg["train"]["batch_pairs"] == 32 and cfg["model"]["dropout"] == 0.75
    assert cfg["train"]["verification_weight"] == 0.5


def test_config_hash_is_stable_and_sensitive():
    a = base()
    b = copy.deepcopy(a)
    assert config_hash(a["train"]) == config_hash(b["train"])
    b["train"]["lr"] = 0.02
    assert config_hash(a["train"]) != config_hash(b["train"])


def test_snakemake_rejects_a_typo_by_name(tmp_path):
    bad = base()
    bad["evaluate"]["max_rnak"] = 10
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/tables/table2.md", "--configfile",
                           str(cfgfile), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "max_rnak" in proc.stdout + proc.stderr


def test_runtime_keys_are_left_out_of_result_keys_and_epochs_out_of_the_checkpoint_key():
    from reid.config import checkpoint_keys, result_keys

    cfg = load(ROOT / "config.yaml")
    cfg["dataset"]["market1501"] = {"source": "archive", "kind": "market1501", "archive": "m.zip",
                                    "url": "https://example.org/m.zip", "md5": "0" * 32}
    res = result_keys(cfg)
    assert "mlflow" not in res and "workers" not in res["train"] and "device" not in res["train"]
    assert "batch_size" not in res["evaluate"] and "pretrained_url" not in res["model"]
    assert res["dataset"]["market1501"] == {"source": "archive", "kind": "market1501", "archive": "m.zip", "md5": "0" * 32}
    assert res["train"]["epochs"] == cfg["train"]["epochs"] and res["evaluate"]["rerank"] == cfg["evaluate"]["rerank"]
    assert result_keys(cfg["train"], "train") == res["train"]  # a section, named by its path
    assert "epochs" not in checkpoint_keys(cfg["train"], "train") and "lr" in checkpoint_keys(cfg["train"], "train")


def test_the_configuration_layers_import_downward_only():
    """Schema and defaults (reid.config) at the bottom, importing no pipeline module; typed sections
    (reid.typed_config) on it; the cross-registry checks (reid.config_checks) on top, imported by
    neither (issue 20: check_references was the one import that ran back up)."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "reid"

    def reid_imports(name):
        tree = ast.parse((package / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reid"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("reid"))
        return found

    assert reid_imports("config") == set()
    assert reid_imports("typed_config") == {"reid.config"}
    below = [m for m in ("reid.config", "reid.typed_config") if "reid.config_checks" in reid_imports(m.split(".")[1])]
    assert not below


def test_the_reranking_weight_has_one_spelling_in_code():
    """config.yaml says `lambda`; the typed section and the metrics say `lambda_value`; the old way of
    passing the config's key to the metrics still works, with a DeprecationWarning."""
    import warnings

    from reid.metrics.rerank import rerank_args
    from reid.typed_config import RerankConfig

    assert RerankConfig.from_dict({"lambda": 0.4}).lambda_value == 0.4
    assert RerankConfig.from_dict({"lambda": 0.4}).as_dict()["lambda"] == 0.4  # the config's spelling, hashed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rerank_args({"lambda_value": 0.4})["lambda_value"] == 0.4
    with pytest.warns(DeprecationWarning, match="pass 'lambda_value'"):
        assert rerank_args({"lambda": 0.4})["lambda_value"] == 0.4


def test_attention_without_a_stage_and_unordered_bot_milestones_are_refused_when_the_config_is_read():
    """Both used to surface only in the training job, after the dataset was built."""
    from reid.config_checks import check_references, from_config

    cfg = base()
    cfg["model"]["attention_layers"] = []
    cfg["models"] = ["baseline"]  # no attention: nothing to put after a stage
    check_references(validate(copy.deepcopy(cfg)))
    for models in (["baseline", "self_attention"], ["bot_self_attention"], ["mutual"]):
        cfg["models"] = models
        with pytest.raises(ConfigError, match=rf"model.attention_layers is empty, but {models[-1]} put attention"):
            check_references(validate(copy.deepcopy(cfg)))
    cfg = base()
    cfg["bot"]["lr_milestones"] = [26, 20]
    with pytest.raises(ConfigError, match=r"bot.lr_milestones must be strictly increasing epochs, got \[26, 20\]"):
        from_config(cfg)
    from reid.typed_config import BotConfig

    with pytest.raises(ConfigError, match="strictly increasing"):  # the training command's own section
        BotConfig.from_dict({"lr_milestones": [5, 5]})
