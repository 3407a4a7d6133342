"""Numeric command-line options checked against the configuration schema's bounds.

A verb's ``--max-rank`` takes the bounds of config ``evaluate.max_rank``, its ``--threads`` those of
the schema's ``$defs.threads``: the schema (workflow/schemas/config.schema.yaml) is the one place
the bounds are written, and ``tests/test_cli_bounds.py`` walks every numeric option of every verb.
"""

from __future__ import annotations

import argparse

from reid.config import ConfigError, check_number, key_schema


def bounded(key: str, option: str):
    """An argparse ``type`` for ``option``: an integer or a number (as schema key ``key`` says),
    refused with the option, the value and the key when it is outside the key's bounds
    (reid.config.check_number). The schema is read when a value is parsed, not when the parser is
    built (every ``python -m reid`` builds all verbs' parsers). The function carries ``schema_key``
    for the test that walks them."""

    def parse(text: str):
        node = key_schema(key)
        kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        convert = float if "number" in kinds else int
        try:
            value = convert(text)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"{option} {text!r}: expected {kind} (config '{key}')") from None
        try:
            return check_number(value, key, option)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = option
    parse.schema_key = key
    return parse
