"""Issue 11 kind 7: a stage run by hand checks its JSON parameters up front, naming the option and the key."""

import pytest

from reid.cli import main
from reid.config import ConfigError, parse_json_arg

TRAIN_ARGS = ["train", "--dataset", "d", "--model", "baseline", "--seed", "0", "--data", "nowhere",
              "--mean-image", "nowhere.pt", "--model-params", "{}", "--mlflow-params", "{}",
              "--out-dir", "out", "--checkpoint-dir", "ckpt"]


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def test_a_misspelt_key_is_named_before_any_work(capsys):
    code, err = run_cli(TRAIN_ARGS + ["--train-params", '{"devcie": "cpu", "epochs": 2}'], capsys)
    assert code == 2
    assert "--train-params (config 'train'): invalid" in err and "devcie: unexpected key" in err
    assert "KeyError" not in err


def test_a_value_of_the_wrong_type_is_named(capsys):
    code, err = run_cli(["evaluate", "--features", "f.pt", "--run-info", "r", "--out", "m.json",
                         "--rerank", '{"k1": "20"}'], capsys)
    assert code == 2 and "--rerank (config 'evaluate.rerank'): invalid" in err and "k1: '20' is not of type" in err


def test_invalid_json_gets_the_real_message_not_invalid_lambda_value(capsys):
    code, err = run_cli(["evaluate", "--features", "f.pt", "--run-info", "r", "--out", "m.json",
                         "--rerank", "{k1: 20}"], capsys)
    assert code == 2
    assert "argument --rerank: --rerank (config 'evaluate.rerank'): not valid JSON" in err
    assert "<lambda>" not in err


def test_a_missing_key_takes_the_same_default_as_config_yaml():
    train = parse_json_arg('{"epochs": 3}', "--train-params", "train")
    assert train["epochs"] == 3 and train["device"] == "auto" and train["workers"] == 0
    spec = parse_json_arg('{"source": "archive", "kind": "market1501", "archive": "m.zip"}', "--spec", "$defs.dataset")
    assert spec["custom"] is False
    with pytest.raises(ConfigError, match="source: 'disk' is not one of"):
        parse_json_arg('{"source": "disk"}', "--spec", "$defs.dataset")


def test_fetch_spec_for_weights_names_an_unknown_key(capsys):
    assert main(["fetch", "--spec", '{"archive": "w.pth", "sha265": "00"}', "--resources", "r"]) == 1
    assert "unexpected key(s) sha265" in capsys.readouterr().err


def test_report_dataset_specs_are_checked_like_config_yaml(tmp_path, capsys):
    """`python -m reid table2` run by hand with a misspelt key in --dataset-specs: the key is named
    (today: KeyError: 'source')."""
    rc = main(["table2", "--metrics", str(tmp_path / "m.json"), "--dataset", "synthetic",
               "--dataset-specs", '{"synthetic": {"sorce": "synthetic"}}', "--backbone", "resnet18",
               "--out", str(tmp_path / "t.md")])
    err = capsys.readouterr().err
    assert rc == 1 and "--dataset-specs entry 'synthetic'" in err and "sorce: unexpected key" in err
