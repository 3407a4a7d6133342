"""The model interface every builder keeps (docs/extending.md): build, check, and the builder's source.

The interface (docs/extending.md): ``function(num_classes, config)`` returns an ``nn.Module`` whose
``forward(x1, x2)`` on a batch of B pairs returns a dict with ``logits1`` and ``logits2``
(B x num_classes identity logits) and optionally ``verif_logits`` (B x 2, class 1 = same identity;
absent or None: no verifier), and whose ``embed(x)`` returns the (B, D) test-time features. Every
check here names the builder (``package.module:function``) so that a wrong return says whose it is.

How a model file records its builder and how it is rebuilt: reid.models.builder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from reid.models.outputs import PairOutput
from reid.variants import Variant, split_entry


class CustomModelError(ValueError):
    """A custom model (or its builder) that does not keep the interface of docs/extending.md."""


def build(variant: Variant, num_classes: int, config: Mapping[str, Any]) -> nn.Module:
    """``variant.build(num_classes, config)``, checked to be an nn.Module with ``embed``.

    Raises ImportError naming the entry when it cannot be imported, CustomModelError when it returns
    something else.
    """
    model = variant.build(num_classes, config)
    check_module(model, variant.builder)
    return model


def check_module(model: Any, entry: str) -> None:
    if not isinstance(model, nn.Module):
        raise CustomModelError(f"{entry} returned {type(model).__name__}, not a torch.nn.Module")
    if not callable(getattr(model, "embed", None)):
        raise CustomModelError(f"{entry}: the model {type(model).__name__} has no embed(x) method "
                               "(the (B, D) test-time features)")


def check_pair_output(out: Any, batch: int, num_classes: int, entry: str) -> None:
    """``forward(x1, x2)``'s result for a batch of ``batch`` pairs, as pair_loss needs it."""
    if isinstance(out, PairOutput):
        out = out._asdict()
    if not isinstance(out, Mapping):
        raise CustomModelError(f"{entry}: forward(x1, x2) returned {type(out).__name__}, expected a dict with "
                               "logits1, logits2 and optionally verif_logits")
    for key, width in (("logits1", num_classes), ("logits2", num_classes), ("verif_logits", 2)):
        value = out.get(key)
        if value is None and key == "verif_logits":
            continue
        if not isinstance(value, Tensor):
            raise CustomModelError(f"{entry}: forward(x1, x2)[{key!r}] is "
                                   f"{'missing' if value is None else type(value).__name__}, expected a tensor "
                                   f"of shape ({batch}, {width})")
        if tuple(value.shape) != (batch, width):
            raise CustomModelError(f"{entry}: forward(x1, x2)[{key!r}] has shape {tuple(value.shape)}, "
                                   f"expected ({batch}, {width})" + (" (num_classes)" if width == num_classes else ""))


def check_embedding(emb: Any, batch: int, entry: str) -> None:
    """``embed(x)``'s result for a batch of ``batch`` images: a (B, D) floating-point tensor."""
    if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != batch or not emb.is_floating_point():
        shape = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
        raise CustomModelError(f"{entry}: embed(x) returned {shape}, expected a floating-point tensor of shape "
                               f"({batch}, D)")


def code_paths(entry: str) -> list[str]:
    """The source the builder needs beside the ``reid`` package to load a pickled model elsewhere
    (MLflow's ``code_paths``): its top-level package folder, or its module file. [] for reid's own."""
    module_name, _ = split_entry(entry, "builder")
    top = module_name.split(".")[0]
    if top == "reid":
        return []
    module = sys.modules.get(top)
    if module is None:
        import importlib

        module = importlib.import_module(top)
    file = getattr(module, "__file__", None)
    if file is None:  # a namespace package: its folder
        return [str(Path(p)) for p in getattr(module, "__path__", [])][:1]
    path = Path(file)
    return [str(path.parent if path.name == "__init__.py" else path)]
