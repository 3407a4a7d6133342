"""The paper's model: ResNet Siamese branches, self- and mutual attention, ID + verification heads.

See docs/model.md for the map from the paper's equations to this code.
"""

from reid.models.attention import LowRankMap, MutualAttention, SelfAttention, spatial_attention
from reid.models.backbone import BACKBONES
from reid.models.cost import training_step_flops
from reid.models.losses import pair_loss
from reid.models.pretrained import PretrainedWeightsError, load_pretrained_backbone, sha256_of_file, verify_sha256
from reid.models.options import ModelOptions
from reid.models.outputs import PairOutput
from reid.models.siamese import TEST_EMBEDDINGS, VARIANTS, PairFeatures, ReIDModel, build_model

__all__ = [
    "BACKBONES",
    "TEST_EMBEDDINGS",
    "VARIANTS",
    "LowRankMap",
    "ModelOptions",
    "MutualAttention",
    "PairFeatures",
    "PairOutput",
    "PretrainedWeightsError",
    "ReIDModel",
    "SelfAttention",
    "build_model",
    "load_pretrained_backbone",
    "pair_loss",
    "sha256_of_file",
    "spatial_attention",
    "training_step_flops",
    "verify_sha256",
]
