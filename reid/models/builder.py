"""How every model is recorded in model.pt and rebuilt from it: a builder entry and its arguments.

Every variant, the paper's included, is made by a builder ``"package.module:function"`` called as
``function(num_classes, config, **args)`` (reid.variants). A model file's ``meta["builder"]`` keeps
``entry``, ``args``, ``num_classes`` and ``config`` (plain values: ``torch.load(weights_only=True)``),
so ``rebuild`` makes the same architecture again in another process (extract, rank, export,
figures) and the file's weights are loaded into it.

Files written before this layout describe a paper variant by ``meta["model_kwargs"]`` (ReIDModel's
keyword arguments with ``variant`` and ``num_classes``); ``legacy_builder`` turns that into the
builder form, so reid.models.runtime.load_trained_model gives every reader one layout.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from torch import nn

from reid.variants import PAPER_BUILDER, Variant, import_entry


def builder_meta(variant: Variant, num_classes: int, config: Mapping[str, Any]) -> dict:
    """What a model file keeps to call ``variant``'s builder again (plain values)."""
    return {"entry": variant.builder, "args": _plain(variant.builder_args), "num_classes": int(num_classes),
            "config": _plain(config)}


def rebuild(builder: Mapping[str, Any], what: str) -> nn.Module:
    """The untrained model a model file's ``meta["builder"]`` describes (load its weights next).

    The builder gets the recorded config with ``model.pretrained`` unset: the weights come from the
    file, and the ImageNet file need not exist here. ``what`` names the file in errors. Raises
    ImportError naming the entry when it cannot be imported (it must be importable by this process
    too), reid.models.custom.CustomModelError when it returns something else.
    """
    from reid.models.custom import check_module

    entry = builder["entry"]
    function = import_entry(entry, f"{what}: the model's builder")
    config = dict(builder["config"])
    if isinstance(config.get("model"), Mapping) and config["model"].get("pretrained") is not None:
        config["model"] = {**config["model"], "pretrained": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "no pretrained weights": the weights come from the file
        model = function(int(builder["num_classes"]), config, **dict(builder.get("args") or {}))
    check_module(model, entry)
    return model


def builder_of(meta: Mapping[str, Any]) -> dict:
    """A model file's ``meta["builder"]``, or the one ``legacy_builder`` makes from its ``model_kwargs``."""
    return dict(meta["builder"]) if "builder" in meta else legacy_builder(meta["model_kwargs"])


def legacy_builder(model_kwargs: Mapping[str, Any]) -> dict:
    """``meta["builder"]`` for a model file that holds ``meta["model_kwargs"]`` (the paper's variants,
    written before every model was recorded by its builder). Options such a file lacks take
    ModelOptions' defaults, which were ReIDModel's. Raises KeyError (variant, num_classes) or
    TypeError (an option this code does not know)."""
    from reid.models.options import ModelOptions

    kwargs = dict(model_kwargs)
    variant, num_classes = kwargs.pop("variant"), kwargs.pop("num_classes")
    options = ModelOptions(**kwargs).as_dict()
    return {"entry": PAPER_BUILDER, "args": {"variant": variant}, "num_classes": num_classes,
            "config": {"model": {**options, "pretrained": None, "pretrained_sha256": None}}}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
