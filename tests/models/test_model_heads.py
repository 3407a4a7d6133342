"""The readings of the heads (docs/model.md, choice 6): the 512-d layer's batch norm, f_d, the verification layers."""

import warnings

import pytest
import torch
from torch import nn

from reid.models import build_model
from reid.models.heads import Embedding, pair_feature, verification_head


def test_embedding_without_batch_norm_is_linear_then_leaky_relu():
    torch.manual_seed(0)
    emb = Embedding(8, 4, norm="none")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in emb.modules())
    x = torch.randn(5, 8)
    torch.testing.assert_close(emb(x), nn.functional.leaky_relu(x @ emb.linear.weight.T + emb.linear.bias, 0.1))
    # the default draws the same initial weights: only the batch norm differs
    torch.manual_seed(0)
    assert torch.equal(Embedding(8, 4).linear.weight, emb.linear.weight)
    with pytest.raises(ValueError, match="model.embedding_norm 'layernorm' is unknown"):
        Embedding(8, 4, norm="layernorm")


def test_pair_feature_readings():
    e1, e2 = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[3.0, 1.0, 0.5]])
    torch.testing.assert_close(pair_feature(e1, e2), torch.tensor([[4.0, 9.0, 0.0]]))
    torch.testing.assert_close(pair_feature(e1, e2, "absolute"), torch.tensor([[2.0, 3.0, 0.0]]))
    # per dimension, the absolute reading is the square root of the squared one
    torch.testing.assert_close(pair_feature(e1, e2, "absolute"), pair_feature(e1, e2).sqrt())
    with pytest.raises(ValueError, match="verification_feature 'cosine' is unknown"):
        pair_feature(e1, e2, "cosine")


def test_sequential_verification_head_is_a_512d_layer_then_two_classes():
    head = verification_head(16, "batchnorm", "sequential")
    assert isinstance(head[0], nn.BatchNorm1d) and isinstance(head[1], Embedding) and head[1].linear.out_features == 512
    assert head[2].in_features == 512 and head[2].out_features == 2
    plain = verification_head(16, "none", "sequential", embedding_norm="none")
    assert isinstance(plain[0], Embedding) and not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    default = verification_head(16)
    assert [type(m) for m in default] == [nn.BatchNorm1d, nn.Linear] and default[1].in_features == 16
    assert isinstance(verification_head(16, "none"), nn.Linear)
    with pytest.raises(ValueError, match="model.verification_head 'mlp' is unknown"):
        verification_head(16, head="mlp")


def test_the_model_feeds_the_chosen_pair_feature_to_the_verifier():
    def build(**kw):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_model("baseline", 3, backbone="resnet18", embedding_dim=8, dropout=0.0, **kw).eval()

    x1, x2 = torch.randn(2, 3, 32, 16), torch.randn(2, 3, 32, 16)
    for kind in ("squared", "absolute"):
        model = build(verification_feature=kind)
        with torch.no_grad():
            out = model(x1, x2)
            pair = model.pair_features(x1, x2).pair
            expected = model.verifier(pair_feature(pair[:2], pair[2:], kind))
        torch.testing.assert_close(out.verif_logits, expected)
    squared, absolute = build(), build(verification_feature="absolute")
    assert torch.equal(squared.verifier[1].weight, absolute.verifier[1].weight)  # same draws, other feature
    with torch.no_grad():
        assert not torch.allclose(squared(x1, x2).verif_logits, absolute(x1, x2).verif_logits)
    assert build(verification_head="sequential").options.verification_head == "sequential"
    with pytest.raises(ValueError, match="verification_feature 'cosine' is unknown"):
        build(verification_feature="cosine")
