"""The Siamese re-ID model: shared ResNet branches, self/mutual attention, identification + verification heads.

Two paths share every weight (see docs/model.md):

* the *single-image* path embeds an image on its own -- it feeds the identification loss and is the
  test-time embedding (``embed``);
* the *pair* path (variant ``mutual`` only) applies mutual attention between the two images of a
  pair -- it feeds the verification loss.

The stem and the stages up to the first attention layer run once per image; the two paths split
there, so the pair path costs the later stages a second time (layer4 for the default [3, 4]).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reid.models.attention import LowRankMap, MutualAttention, SelfAttention
from reid.models.backbone import STAGES, build_resnet, run_stage, run_stem, stage_channels
from reid.models import heads
from reid.models.heads import Embedding, linear_head
from reid.models.options import ModelOptions
from reid.models.outputs import PairOutput
from reid.models.pretrained import load_pretrained_backbone
from reid.readings import TEST_EMBEDDINGS
from reid.variants import BUILTIN, PAPER_BUILDER, Variant, get_variant

# The variants ReIDModel builds: the registry's built-ins made by the paper's builder (reid.variants says
# what each one has). A variant with another builder is not ReIDModel's to build.
VARIANTS = tuple(v.name for v in BUILTIN if v.builder == PAPER_BUILDER)
# How the mutual model embeds one image alone (identification loss and test time):
#   single      - self-attention only, F = f * SA + f (the mutual term needs a partner)
#   mutual_self - the image is its own partner, F = f * conv1x1(SA * SA) + f
#   plain       - no attention at all on this path ("the original input")
# Which path of the mutual model the identification loss trains:
#   single - the single-image path (default, docs/model.md choice 1); the later stages run twice
#   pair   - the mutual-attention path of the pair, as the verification loss; each stage runs once
#            per image. Test images then go through the pair path with themselves as partner,
#            so it requires test_embedding "mutual_self".
# Both tuples and that rule live in reid.readings, which the Snakefile parses without torch.


class PairFeatures(NamedTuple):
    """The embeddings the heads of ``forward`` see, for a batch laid out as [x1; x2] (2B rows, or B without x2).

    ``identity``: (2B, D) the embeddings the identity classifier sees (the single-image path, or
    the pair path under identification_path "pair"); ``pair``: (2B, D) the embeddings the verifier
    compares (the mutual-attention path for ``mutual``, otherwise ``identity``), None without a
    verifier or without x2.
    """

    identity: Tensor
    pair: Tensor | None


class ReIDModel(nn.Module):
    """One paper variant composed of parts: ResNet backbone, attention blocks, embedding, heads.

    Build it with ``build_model`` (which also loads ImageNet weights). ``variant`` names one of
    VARIANTS; its declared attention (none | self | mutual) and verifier (reid.variants) choose the
    parts: self-attention blocks after ``options.attention_layers`` (self, mutual), mutual-attention
    blocks (mutual), a verification head (verifier). ``options`` (a ModelOptions, or its fields as
    keywords) are the architecture choices of docs/model.md. Raises ValueError for another variant
    or an option out of range (naming the config key).
    """

    def __init__(self, variant: str, num_classes: int, options: ModelOptions | None = None, **fields):
        super().__init__()
        if options is not None and fields:
            raise TypeError("give ReIDModel either options or their fields as keywords, not both")
        options = options if options is not None else ModelOptions(**fields)
        spec = _paper_variant(variant)
        options.check(spec.attention, num_classes)
        self.variant, self.num_classes, self.options = variant, num_classes, options
        self.test_embedding = options.test_embedding
        mutual = spec.attention == "mutual"  # the pair path exists (eqs. 5-8)
        self.identification_path = options.identification_path if mutual else "single"
        self.attention_layers = tuple(sorted(options.attention_layers)) if spec.has_attention else ()
        # the parts, created in this order (the random initialisation draws in it)
        self.backbone = build_resnet(options.backbone)
        self.self_attention, self.mutual_attention = _attention_blocks(options, self.attention_layers, mutual,
                                                                       self.identification_path)
        self.embedding = Embedding(stage_channels(options.backbone, 4), options.embedding_dim, options.embedding_norm)
        self.dropout = nn.Dropout(options.dropout)
        self.classifier = linear_head(options.embedding_dim, num_classes)
        self.verifier = (heads.verification_head(options.embedding_dim, options.verification_norm,
                                                 options.verification_head, options.embedding_norm)
                         if spec.verifier else None)

    @property
    def _mutual(self) -> bool:
        """Whether the model has the pair path (mutual-attention blocks, eqs. 5-8)."""
        return len(self.mutual_attention) > 0

    # --- the public entry points -------------------------------------------------------------

    def forward(self, x1: Tensor, x2: Tensor | None = None) -> PairOutput:
        """Training forward on a batch of pairs (x1[i], x2[i]): the heads on ``pair_features``.

        ``x2`` may be omitted for a model without a verifier (ide) only. Dropout (p =
        ``options.dropout``) precedes each classifier; the verifier sees f_d = (e_1 - e_2)^2 of the
        pair embeddings.
        """
        identity, pair_embedding = self._embeddings(x1, x2)
        b = x1.shape[0]
        logits = self.classifier(self.dropout(identity))
        pair = pair_embedding()  # after the classifier: the order of the operations is the training's arithmetic
        verif_logits = None
        if pair is not None:
            # f_d = (f_1 - f_2)^2 (or |f_1 - f_2|), then the embedding's dropout, once per pair: masking the
            # two images independently would make even identical images differ in ~37% of the units at p = 0.75.
            pair_feature = heads.pair_feature(pair[:b], pair[b:], self.options.verification_feature)
            verif_logits = self.verifier(self.dropout(pair_feature))
        return PairOutput(logits[:b], logits[b:] if x2 is not None else None, verif_logits)

    def pair_features(self, x1: Tensor, x2: Tensor | None = None) -> PairFeatures:
        """The embeddings ``forward``'s heads see, in the current train/eval mode (PairFeatures).

        Raises ValueError when a model with a verifier gets no x2, or x1 and x2 differ in shape.
        """
        identity, pair_embedding = self._embeddings(x1, x2)
        return PairFeatures(identity, pair_embedding())

    def _embeddings(self, x1: Tensor, x2: Tensor | None) -> tuple[Tensor, Callable[[], Tensor | None]]:
        """(identity embeddings, a function computing the pair embeddings): PairFeatures' two fields, the
        second computed when called, so that ``forward`` keeps the order of the paper's arithmetic."""
        if x2 is None:
            if self.verifier is not None:
                raise ValueError(f"variant {self.variant!r} needs a pair of batches (x1, x2)")
            images = x1
        else:
            if x1.shape != x2.shape:
                raise ValueError(f"the two batches of a pair differ in shape: {tuple(x1.shape)} vs {tuple(x2.shape)}")
            images = torch.cat([x1, x2])
        shared, first_sa = self._trunk(images)
        if self.identification_path == "pair" and x2 is not None:
            # both losses on the mutual-attention path, one pass per image; this path is then the only
            # one trained, so its batch norms update their running statistics
            emb = self.embedding(self._pool(self._pair_tail(shared, first_sa)))
            return emb, lambda: emb
        emb = self.embedding(self._pool(self._single_tail(shared, first_sa)))
        if self.verifier is None or x2 is None:
            return emb, lambda: None
        if not self._mutual:
            return emb, lambda: emb

        def pair_path() -> Tensor:
            with _batch_stats_only(self._pair_path_norms()):
                return self.embedding(self._pool(self._pair_tail(shared, first_sa)))

        return emb, pair_path

    def single_embedding(self, x: Tensor) -> Tensor:
        """The (B, D) single-image embedding in the current train/eval mode."""
        shared, first_sa = self._trunk(x)
        return self.embedding(self._pool(self._single_tail(shared, first_sa)))

    def embed(self, x: Tensor) -> Tensor:
        """Test-time (B, D) embedding of single images: eval mode (no dropout, running BN statistics)."""
        with _eval_mode(self):
            return self.single_embedding(x)

    def set_test_embedding(self, mode: str) -> None:
        """Embed test images another way with the same weights (``embed``; no retraining).

        ``mode`` is one of TEST_EMBEDDINGS; only the ``mutual`` variant has a choice (the others
        accept "single", their own single-image path). ``options`` keep the training-time value.
        Raises ValueError for an unknown mode or a choice the variant does not have.
        """
        if mode not in TEST_EMBEDDINGS:
            raise ValueError(f"test embedding {mode!r} is unknown; choose one of {', '.join(TEST_EMBEDDINGS)}")
        if not self._mutual and mode != "single":
            raise ValueError(f"variant {self.variant!r} embeds test images one way only ('single'), not {mode!r}")
        if self._mutual:
            self.test_embedding = mode

    def activation_maps(self, x: Tensor, partner: Tensor | None = None, stage: int = 4) -> Tensor:
        """(B, h, w) channel mean of |F| after residual stage ``stage`` (default layer4), eval mode, no gradients.

        F is the stage's output with the attention of that stage applied, if it has one. With
        ``partner`` (mutual only) the maps are x's features under mutual attention with partner[i].
        For attention figures (reid.report.figures). Raises ValueError for a stage outside 1-4.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        if partner is not None:
            if not self._mutual:
                raise ValueError(f"activation maps with a partner need the mutual variant, not {self.variant!r}")
            if partner.shape != x.shape:
                raise ValueError(f"partner shape {tuple(partner.shape)} differs from x {tuple(x.shape)}")
        with _eval_mode(self), torch.no_grad():
            if stage < self.split_stage:  # before any attention: the backbone alone, on x only
                fmap = run_stem(self.backbone, x)
                for s in range(STAGES[0], stage + 1):
                    fmap = run_stage(self.backbone, s, fmap)
            elif partner is None:
                shared, first_sa = self._trunk(x)
                fmap = self._single_tail(shared, first_sa, last_stage=stage)
            else:
                shared, first_sa = self._trunk(torch.cat([x, partner]))
                fmap = self._pair_tail(shared, first_sa, last_stage=stage)[: x.shape[0]]
        return fmap.abs().mean(dim=1).float()

    # --- the paths ----------------------------------------------------------------------------

    @property
    def split_stage(self) -> int:
        """The last stage computed once per image; the single and pair paths differ after it."""
        return self.attention_layers[0] if self.attention_layers else STAGES[-1]

    def _single_mode(self) -> str:
        return self.test_embedding if self._mutual else "single"

    def _trunk(self, images: Tensor) -> tuple[Tensor, LowRankMap | None]:
        """Stem .. split stage, and the self-attention there (shared by both paths)."""
        f = run_stem(self.backbone, images)
        for stage in range(STAGES[0], self.split_stage + 1):
            f = run_stage(self.backbone, stage, f)
        needs_sa = self.attention_layers and (self._mutual or self._single_mode() != "plain")
        first_sa = self.self_attention[str(self.split_stage)](f) if needs_sa else None
        return f, first_sa

    def _single_tail(self, f: Tensor, first_sa: LowRankMap | None, last_stage: int = STAGES[-1]) -> Tensor:
        mode = self._single_mode()
        for stage in range(self.split_stage, last_stage + 1):
            if stage > self.split_stage:
                f = run_stage(self.backbone, stage, f)
            if stage not in self.attention_layers or mode == "plain":
                continue
            sa = first_sa if stage == self.split_stage else self.self_attention[str(stage)](f)
            if mode == "single":
                f = sa.modulate(f)  # F = f * SA + f
            else:  # mutual_self: the image is its own partner
                f = self.mutual_attention[str(stage)](sa, sa).modulate(f)
        return f

    def _pair_tail(self, f: Tensor, first_sa: LowRankMap | None, last_stage: int = STAGES[-1]) -> Tensor:
        """Eqs. 5-8 on a batch laid out as [x1; x2]: F_k = f_k * MA + f_k with MA = conv1x1(SA_1 * SA_2)."""
        b = f.shape[0] // 2
        for stage in range(self.split_stage, last_stage + 1):
            if stage > self.split_stage:
                f = run_stage(self.backbone, stage, f)
            if stage not in self.attention_layers:
                continue
            sa = first_sa if stage == self.split_stage else self.self_attention[str(stage)](f)
            ma = self.mutual_attention[str(stage)](sa.rows(slice(0, b)), sa.rows(slice(b, 2 * b)))
            f = ma.repeat(2).modulate(f)  # the same MA for both members of a pair
        return f

    def _pool(self, fmap: Tensor) -> Tensor:
        return torch.flatten(self.backbone.avgpool(fmap), 1)

    def _pair_path_norms(self) -> list[nn.Module]:
        """Batch norms the pair path runs through a second time (the stages after the split, the embedding)."""
        modules = [getattr(self.backbone, f"layer{stage}") for stage in STAGES if stage > self.split_stage]
        modules.append(self.embedding)
        return [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def build_model(
    variant: str,
    num_classes: int,
    *,
    pretrained: str | Path | None = None,
    pretrained_sha256: str | None = None,
    **options,
) -> ReIDModel:
    """Build one of VARIANTS (the paper's variants of reid.variants); load ImageNet weights if given.

    ``options`` are ModelOptions' fields (backbone, embedding_dim, dropout, ...: see its docstring;
    a missing one takes its default). New layers are Kaiming-initialised. Without ``pretrained`` the
    backbone stays randomly initialised and a warning says so.
    """
    model = ReIDModel(variant, num_classes, ModelOptions(**options))
    if pretrained is None:
        warnings.warn(
            f"model.pretrained is not set: the {model.options.backbone} backbone is randomly initialised "
            "(fine for the CPU demo; the paper fine-tunes ImageNet weights)",
            UserWarning,
            stacklevel=2,
        )
    else:
        load_pretrained_backbone(model, pretrained, pretrained_sha256)
    return model


def build_from_config(num_classes: int, config: dict, variant: str) -> ReIDModel:
    """The builder of the paper's variants (reid.variants.PAPER_BUILDER): ``build_model`` with config
    ``model:``'s keys (ModelOptions.from_config; ImageNet weights from ``model.pretrained`` when set)."""
    model_cfg = config["model"]
    return build_model(variant, num_classes, **ModelOptions.from_config(model_cfg).as_dict(),
                       pretrained=model_cfg.get("pretrained"), pretrained_sha256=model_cfg.get("pretrained_sha256"))


def _paper_variant(name: str) -> Variant:
    spec = get_variant(name) if name in VARIANTS else None
    if spec is None:
        raise ValueError(f"model variant {name!r} is unknown; choose one of {', '.join(VARIANTS)}")
    return spec


def _attention_blocks(options: ModelOptions, layers: tuple[int, ...], mutual: bool,
                      identification_path: str) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """The self-attention blocks after each stage of ``layers`` and, for ``mutual``, the mutual-attention ones."""
    # attention_init "zero" zeroes the last convolution of the path the identification loss trains, so
    # that path starts as the plain backbone (F = f). On the pair path that is eq. 6's: zeroing eq. 4's
    # instead would make SA = 0 a fixed point there (SA_1 * SA_2 has zero gradient at 0), and the
    # attention would never start (docs/model.md, choice 4).
    zero_mutual = options.attention_init == "zero" and identification_path == "pair"
    sa_init = "kaiming" if zero_mutual else options.attention_init
    channels = {k: stage_channels(options.backbone, k) for k in layers}
    self_attention = nn.ModuleDict({str(k): SelfAttention(channels[k], options.attention_norm, sa_init,
                                                                  options.attention_channels)
                                    for k in layers})
    mutual_attention = nn.ModuleDict({str(k): MutualAttention(channels[k], zero=zero_mutual,
                                                                     maps=options.attention_channels) for k in layers}
                                     if mutual else {})
    return self_attention, mutual_attention


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _batch_stats_only(norms: list[nn.Module]) -> Iterator[None]:
    """Normalise with batch statistics but leave the running statistics alone.

    The running statistics are what the single-image path uses at test time; the pair path's
    features (f * MA + f) have other statistics and must not leak into them. In eval mode
    nothing changes: running statistics are used either way.
    """
    saved = [norm.track_running_stats for norm in norms]
    for norm in norms:
        if norm.training:
            norm.track_running_stats = False
    try:
        yield
    finally:
        for norm, flag in zip(norms, saved):
            norm.track_running_stats = flag
