"""Issue 21 kind 5: every numeric option of every verb is checked against the config schema's bounds.

The bounds are read from workflow/schemas/config.schema.yaml (reid.config.key_schema), never
restated here: the walk takes each option's schema key from the option itself.
"""

import argparse

import numpy as np
import pytest

from reid.cli import build_parser, main
from reid.config import key_schema


def is_numeric(action) -> bool:
    """Whether the option's type reads "1" as a number (whatever function it is): JSON sections
    refuse it, strings keep it a string."""
    if action.type is None:
        return False
    try:
        value = action.type("1")
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return hasattr(action.type, "schema_key")
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_options():
    """(verb, option string, action) of every option of every verb whose value is a number."""
    found = []
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb, parser in sub.choices.items():
        for action in parser._actions:
            if is_numeric(action):
                found.append((verb, action.option_strings[0] if action.option_strings else action.dest, action))
    return found


def out_of_range(node):
    """Values just outside the schema node's bounds (and a float for an integer key)."""
    step = 1 if node.get("type") == "integer" else 0.5
    values = []
    if "minimum" in node:
        values += [node["minimum"] - step, node["minimum"] - 4 * step]
    if "exclusiveMinimum" in node:
        values += [node["exclusiveMinimum"], node["exclusiveMinimum"] - step]
    if "maximum" in node:
        values.append(node["maximum"] + step)
    if node.get("type") == "integer":
        values.append("2.0")
    return values


def test_every_numeric_option_of_every_verb_has_schema_bounds():
    options = numeric_options()
    assert len(options) >= 15  # train, extract, evaluate, evaluate-features, rank and the report verbs
    unbounded = [f"{verb} {opt}" for verb, opt, action in options if not hasattr(action.type, "schema_key")]
    assert not unbounded, f"numeric options without schema bounds: {unbounded}"


@pytest.mark.parametrize("verb,option,action", numeric_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_numeric_option_refuses_values_outside_its_bounds(verb, option, action):
    node = key_schema(action.type.schema_key)
    bad = out_of_range(node)
    assert bad, f"{verb} {option}: schema key {action.type.schema_key} has no bound"
    for value in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=option):
            action.type(str(value))
    if action.default is not None and not isinstance(action.default, str):
        assert action.type(str(action.default)) == action.default  # the default is within bounds


@pytest.fixture
def features_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(path, query_features=rng.normal(size=(4, 8)).astype(np.float32),
             gallery_features=rng.normal(size=(10, 8)).astype(np.float32),
             query_pids=np.array([0, 1, 2, 3]), gallery_pids=np.array([0, 1, 2, 3, 0, 1, 2, 3, 4, 5]),
             query_camids=np.zeros(4, int), gallery_camids=np.ones(10, int))
    return path


@pytest.mark.parametrize("value", ["0", "-3"])
def test_evaluate_features_refuses_max_rank_below_one_and_writes_nothing(tmp_path, features_file, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate-features", str(features_file), "--out", str(tmp_path / "out"), "--max-rank", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"--max-rank {int(value)}: must be >= 1 (config 'evaluate.max_rank')" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_rank_refuses_top_below_one(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["rank", "--model-file", str(tmp_path / "model.pt"), "--query", "q.jpg", "--gallery", "g",
              "--top", value])
    assert exit_.value.code == 2
    assert f"--top {int(value)}: must be >= 1" in capsys.readouterr().err


def test_every_option_names_a_key_the_schema_has():
    """bounded() reads the schema lazily: a misspelt key would only fail when the option is used."""
    for verb, option, action in numeric_options():
        assert key_schema(action.type.schema_key), f"{verb} {option}"
