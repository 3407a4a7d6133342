"""Test-time features: the flip test (evaluate.flip) and the features file it writes."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from reid.features import embed_records
from reid.models import build_model

SHAPE = (3, 32, 16)


class Record:  # embed_records only reads .path, handed to the transform
    def __init__(self, path):
        self.path = path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("mutual", 4, backbone="resnet18", embedding_dim=16, attention_init="kaiming").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(3))


def features(model, images, flip, batch_size=2):
    records = [Record(i) for i in range(len(images))]
    return embed_records(model, records, lambda i: images[i], batch_size, torch.device("cpu"), flip=flip)


def test_plain_features_are_normalised_embeddings(model, images):
    with torch.no_grad():
        expected = F.normalize(model.embed(images), dim=1)
    torch.testing.assert_close(features(model, images, flip=False), expected)


def test_flip_test_adds_the_mirror_images_normalised_embedding(model, images):
    with torch.no_grad():
        a = F.normalize(model.embed(images), dim=1)
        b = F.normalize(model.embed(images.flip(dims=[3])), dim=1)
    got = features(model, images, flip=True)
    torch.testing.assert_close(got, F.normalize(a + b, dim=1))
    assert not torch.allclose(got, a, atol=1e-3)  # the mirror image really changes the feature
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(images)))


def test_with_the_flip_test_an_image_and_its_mirror_image_get_the_same_feature(model, images):
    mirrored = images.flip(dims=[3])
    torch.testing.assert_close(features(model, images, flip=True), features(model, mirrored, flip=True))
    assert not torch.allclose(features(model, images, flip=False), features(model, mirrored, flip=False), atol=1e-3)


def test_feature_norm_none_keeps_the_embedding_as_the_model_gives_it(model, images):
    records = [Record(i) for i in range(len(images))]
    raw = embed_records(model, records, lambda i: images[i], 2, torch.device("cpu"), feature_norm="none")
    with torch.no_grad():
        torch.testing.assert_close(raw, model.embed(images))
        flipped = model.embed(images.flip(dims=[3]))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(images)), atol=1e-3)
    both = embed_records(model, records, lambda i: images[i], 2, torch.device("cpu"), flip=True, feature_norm="none")
    torch.testing.assert_close(both, (raw + flipped) / 2)  # the mean of the two views
    with pytest.raises(ValueError, match="evaluate.feature_norm 'max' is unknown"):
        embed_records(model, records, lambda i: images[i], 2, torch.device("cpu"), feature_norm="max")
