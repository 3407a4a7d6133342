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
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from reid.models.attention import ATTENTION_INITS, INPUT_NORMS, LowRankMap, MutualAttention, SelfAttention
from reid.models.backbone import BACKBONES, STAGES, build_resnet, run_stage, run_stem, stage_channels
from reid.models import heads
from reid.models.heads import Embedding, linear_head
from reid.models.pretrained import load_pretrained_backbone
from reid.readings import IDENTIFICATION_PATHS, TEST_EMBEDDINGS, identification_path_conflict
from reid.variants import BUILTIN, get_variant

# The variants ReIDModel builds: the registry's built-ins (reid.variants says what each one has).
VARIANTS = tuple(v.name for v in BUILTIN)
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


class ReIDModel(nn.Module):
    """One variant with its heads; build it with ``build_model`` (which also loads ImageNet weights).

    ``test_embedding`` (single | mutual_self | plain) says how the mutual model embeds one image;
    ``attention_norm`` (rms | none) whether eqs. 1-4 see f / RMS(f) or f itself (docs/model.md);
    ``attention_init`` (kaiming | zero) how the conv of eq. 4 starts (zero: every F starts equal to f);
    ``verification_norm`` (batchnorm | none) whether a batch norm precedes the verification layer;
    ``identification_path`` (single | pair) which path of ``mutual`` the identification loss trains;
    ``embedding_norm``, ``verification_feature``, ``verification_head`` (reid.models.heads) and
    ``attention_channels`` (reid.models.attention) are further readings (docs/model.md, "Readings").
    """

    def __init__(
        self,
        variant: str,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        embedding_dim: int = 512,
        dropout: float = 0.75,
        attention_layers: Sequence[int] = (3, 4),
        test_embedding: str = "single",
        attention_norm: str = "rms",
        attention_init: str = "kaiming",
        verification_norm: str = "batchnorm",
        identification_path: str = "single",
        embedding_norm: str = "batchnorm",
        verification_feature: str = "squared",
        verification_head: str = "linear",
        attention_channels: str = "per_channel",
    ):
        super().__init__()
        _check_arguments(
            variant, num_classes, backbone, embedding_dim, dropout, attention_layers, test_embedding, attention_norm,
            attention_init, identification_path,
        )
        spec = get_variant(variant)
        self.variant = variant
        self._mutual = spec.attention == "mutual"  # the pair path exists (eqs. 5-8)
        self.test_embedding = test_embedding
        self.identification_path = identification_path if self._mutual else "single"
        # what build_model needs to rebuild this model from a checkpoint
        self.build_kwargs = dict(
            variant=variant,
            num_classes=num_classes,
            backbone=backbone,
            embedding_dim=embedding_dim,
            dropout=dropout,
            attention_layers=list(attention_layers),
            test_embedding=test_embedding,
            attention_norm=attention_norm,
            attention_init=attention_init,
            verification_norm=verification_norm,
            identification_path=identification_path,
            embedding_norm=embedding_norm,
            verification_feature=verification_feature,
            verification_head=verification_head,
            attention_channels=attention_channels,
        )
        if verification_feature not in heads.VERIFICATION_FEATURES:
            raise ValueError(f"model.verification_feature {verification_feature!r} is unknown; "
                             f"choose one of {', '.join(heads.VERIFICATION_FEATURES)}")
        self.verification_feature = verification_feature
        self.attention_layers = tuple(sorted(attention_layers)) if spec.has_attention else ()
        self.backbone = build_resnet(backbone)
        # attention_init "zero" zeroes the last convolution of the path the identification loss trains, so
        # that path starts as the plain backbone (F = f). On the pair path that is eq. 6's: zeroing eq. 4's
        # instead would make SA = 0 a fixed point there (SA_1 * SA_2 has zero gradient at 0), and the
        # attention would never start (docs/model.md, choice 4).
        zero_mutual = attention_init == "zero" and self.identification_path == "pair"
        sa_init = "kaiming" if zero_mutual else attention_init
        self.self_attention = nn.ModuleDict(
            {
                str(k): SelfAttention(stage_channels(backbone, k), attention_norm, sa_init, attention_channels)
                for k in self.attention_layers
            }
        )
        self.mutual_attention = nn.ModuleDict(
            {str(k): MutualAttention(stage_channels(backbone, k), zero=zero_mutual, maps=attention_channels)
             for k in self.attention_layers}
            if self._mutual
            else {}
        )
        self.embedding = Embedding(stage_channels(backbone, 4), embedding_dim, embedding_norm)
        self.dropout = nn.Dropout(dropout)
        self.classifier = linear_head(embedding_dim, num_classes)
        self.verifier = (heads.verification_head(embedding_dim, verification_norm, verification_head, embedding_norm)
                         if spec.verifier else None)

    # --- the public entry points -------------------------------------------------------------

    def forward(self, x1: Tensor, x2: Tensor | None = None) -> dict[str, Tensor | None]:
        """Training forward on a batch of pairs (x1[i], x2[i]).

        Returns ``logits1``/``logits2`` (B, N) identity logits and ``emb1``/``emb2`` (B, D), the
        embeddings they came from (the single-image path, or the pair path with
        ``identification_path="pair"``); ``verif_logits`` (B, 2) (class 1 = same identity, None for
        ide) and ``pair_emb1``/``pair_emb2``, the embeddings the verifier saw (the mutual-attention
        path for ``mutual``, otherwise the single-image embeddings). ``x2`` may be omitted for ide only.
        """
        if x2 is None:
            if self.verifier is not None:
                raise ValueError(f"variant {self.variant!r} needs a pair of batches (x1, x2)")
            images = x1
        else:
            if x1.shape != x2.shape:
                raise ValueError(f"the two batches of a pair differ in shape: {tuple(x1.shape)} vs {tuple(x2.shape)}")
            images = torch.cat([x1, x2])
        b = x1.shape[0]
        shared, first_sa = self._trunk(images)
        if self.identification_path == "pair" and x2 is not None:
            return self._pair_only_forward(shared, first_sa, b)
        emb = self.embedding(self._pool(self._single_tail(shared, first_sa)))
        dropped = self.dropout(emb)
        logits = self.classifier(dropped)
        out: dict[str, Tensor | None] = {
            "logits1": logits[:b],
            "logits2": logits[b:] if x2 is not None else None,
            "emb1": emb[:b],
            "emb2": emb[b:] if x2 is not None else None,
            "verif_logits": None,
            "pair_emb1": None,
            "pair_emb2": None,
        }
        if self.verifier is None or x2 is None:
            return out
        if self._mutual:
            with _batch_stats_only(self._pair_path_norms()):
                pair_emb = self.embedding(self._pool(self._pair_tail(shared, first_sa)))
        else:
            pair_emb = emb
        # f_d = (f_1 - f_2)^2 (or |f_1 - f_2|), then the embedding's dropout, once per pair: masking the two images
        # independently would make even identical images differ in ~37% of the units at p = 0.75.
        pair_feature = heads.pair_feature(pair_emb[:b], pair_emb[b:], self.verification_feature)
        out["verif_logits"] = self.verifier(self.dropout(pair_feature))
        out["pair_emb1"], out["pair_emb2"] = pair_emb[:b], pair_emb[b:]
        return out

    def _pair_only_forward(self, shared: Tensor, first_sa: LowRankMap | None, b: int) -> dict[str, Tensor]:
        """identification_path="pair": both losses on the mutual-attention path, one pass per image.

        This path is then the only one trained, so its batch norms update their running statistics.
        """
        emb = self.embedding(self._pool(self._pair_tail(shared, first_sa)))
        logits = self.classifier(self.dropout(emb))
        verif_logits = self.verifier(self.dropout(heads.pair_feature(emb[:b], emb[b:], self.verification_feature)))
        return {"logits1": logits[:b], "logits2": logits[b:], "emb1": emb[:b], "emb2": emb[b:],
                "verif_logits": verif_logits, "pair_emb1": emb[:b], "pair_emb2": emb[b:]}

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
        accept "single", their own single-image path). ``build_kwargs`` keep the training-time value.
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
    """Build one of VARIANTS (the built-ins of reid.variants); load ImageNet weights if given.

    ``options`` are ReIDModel's keyword arguments (backbone, embedding_dim, dropout, ...: see its
    docstring). New layers are Kaiming-initialised. Without ``pretrained`` the backbone stays
    randomly initialised and a warning says so.
    """
    model = ReIDModel(variant, num_classes, **options)
    if pretrained is None:
        warnings.warn(
            f"model.pretrained is not set: the {model.build_kwargs['backbone']} backbone is randomly initialised "
            "(fine for the CPU demo; the paper fine-tunes ImageNet weights)",
            UserWarning,
            stacklevel=2,
        )
    else:
        load_pretrained_backbone(model, pretrained, pretrained_sha256)
    return model


def model_options(model_cfg: dict) -> dict:
    """ReIDModel's keyword arguments from config ``model:``, schema-complete (as ``ModelConfig.as_dict()``
    gives it); a missing key is a KeyError naming it."""
    return dict(backbone=model_cfg["backbone"], embedding_dim=model_cfg["embedding_dim"], dropout=model_cfg["dropout"],
                attention_layers=tuple(model_cfg["attention_layers"]), test_embedding=model_cfg["test_embedding"],
                attention_norm=model_cfg["attention_norm"], attention_init=model_cfg["attention_init"],
                identification_path=model_cfg["identification_path"],
                verification_norm=model_cfg["verification_norm"], embedding_norm=model_cfg["embedding_norm"],
                verification_feature=model_cfg["verification_feature"],
                verification_head=model_cfg["verification_head"], attention_channels=model_cfg["attention_channels"])


def build_from_config(num_classes: int, config: dict, variant: str) -> ReIDModel:
    """The builder of the paper's variants in reid.variants: ``build_model`` with config ``model:``'s keys
    (ImageNet weights from ``model.pretrained`` when set)."""
    model_cfg = config["model"]
    return build_model(variant, num_classes, **model_options(model_cfg), pretrained=model_cfg["pretrained"],
                       pretrained_sha256=model_cfg["pretrained_sha256"])


def _check_arguments(
    variant, num_classes, backbone, embedding_dim, dropout, attention_layers, test_embedding, attention_norm,
    attention_init, identification_path,
) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"model variant {variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone: unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"model.embedding_dim must be a positive integer, got {embedding_dim!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"model.dropout must lie in [0, 1), got {dropout!r}")
    layers = list(attention_layers)
    if any(layer not in STAGES for layer in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"model.attention_layers must be distinct stages among {list(STAGES)}, got {layers!r}")
    if get_variant(variant).has_attention and not layers:
        raise ValueError(f"model.attention_layers is empty: variant {variant!r} needs at least one stage")
    if test_embedding not in TEST_EMBEDDINGS:
        choices = ", ".join(TEST_EMBEDDINGS)
        raise ValueError(f"model.test_embedding {test_embedding!r} is unknown; choose one of {choices}")
    if attention_norm not in INPUT_NORMS:
        raise ValueError(f"model.attention_norm {attention_norm!r} is unknown; choose one of {', '.join(INPUT_NORMS)}")
    if attention_init not in ATTENTION_INITS:
        choices = ", ".join(ATTENTION_INITS)
        raise ValueError(f"model.attention_init {attention_init!r} is unknown; choose one of {choices}")
    if identification_path not in IDENTIFICATION_PATHS:
        choices = ", ".join(IDENTIFICATION_PATHS)
        raise ValueError(f"model.identification_path {identification_path!r} is unknown; choose one of {choices}")
    conflict = identification_path_conflict(identification_path, test_embedding)
    if get_variant(variant).attention == "mutual" and conflict:
        raise ValueError(conflict)


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
