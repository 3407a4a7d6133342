"""ImageNet weight loading: checksum (full or torchvision name prefix), strict keys, refusals."""

import hashlib
import warnings

import pytest
import torch
from torchvision.models import resnet18

from reid.models import PretrainedWeightsError, build_model, load_pretrained_backbone, sha256_of_file


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A resnet18 state dict (with its ImageNet fc) saved under torchvision's naming, and its sha256."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    raw = folder / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    named = folder / f"resnet18-{digest[:8]}.pth"
    raw.rename(named)
    return named, digest, state


def build(path=None, sha=None, backbone="resnet18"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning when weights are given
        return build_model("mutual", 4, backbone=backbone, pretrained=path, pretrained_sha256=sha)


def test_sha256_is_streamed_correctly(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_of_file(path) == hashlib.sha256(data).hexdigest()


def test_loads_backbone_by_torchvision_name_prefix(weights):
    path, _, state = weights
    model = build(path)
    loaded = model.backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_full_sha256_accepts_any_name(weights, tmp_path):
    path, digest, state = weights
    other = tmp_path / "imagenet.pth"
    other.write_bytes(path.read_bytes())
    model = build(other, digest.upper())
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_new_layers_keep_their_initialisation(weights):
    path, _, _ = weights
    torch.manual_seed(7)
    with_weights = build(path)
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = build_model("mutual", 4, backbone="resnet18")
    for name in ("classifier.weight", "embedding.linear.weight", "mutual_attention.4.conv.weight"):
        assert torch.equal(with_weights.state_dict()[name], without.state_dict()[name]), name


def test_wrong_name_prefix_is_refused(weights, tmp_path):
    path, digest, _ = weights
    wrong_prefix = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    renamed = tmp_path / f"resnet18-{wrong_prefix}.pth"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError) as error:
        build(renamed)
    assert str(renamed) in str(error.value) and wrong_prefix in str(error.value) and digest in str(error.value)


def test_wrong_full_sha256_is_refused(weights):
    path, digest, _ = weights
    wrong = "f" * 64
    with pytest.raises(PretrainedWeightsError) as error:
        build(path, wrong)
    assert str(path) in str(error.value) and wrong in str(error.value) and digest in str(error.value)


def test_unnamed_file_needs_a_configured_sha256(weights, tmp_path):
    path, _, _ = weights
    plain = tmp_path / "weights.pth"
    plain.write_bytes(path.read_bytes())
    with pytest.raises(PretrainedWeightsError, match="pretrained_sha256 is required"):
        build(plain)
    with pytest.raises(PretrainedWeightsError, match="not 64 hex digits"):
        build(plain, "abc")


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "resnet50-0676ba61.pth"
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build(missing)


def test_weights_of_another_architecture_are_refused(weights):
    path, _, _ = weights
    with pytest.raises(PretrainedWeightsError, match="does not fit") as error:
        build(path, backbone="resnet34")  # resnet34 has more blocks than the resnet18 file
    assert str(path) in str(error.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    raw = tmp_path / "raw.pth"
    torch.save({"epoch": 3, "model": {"conv1.weight": torch.zeros(1)}}, raw)
    digest = sha256_of_file(raw)
    with pytest.raises(PretrainedWeightsError, match="not a torchvision state dict"):
        load_pretrained_backbone(resnet18(weights=None), raw, digest)


def test_a_bare_torchvision_resnet_can_be_loaded(weights):
    path, digest, state = weights
    target = resnet18(weights=None)
    target.fc = torch.nn.Identity()
    assert load_pretrained_backbone(target, path) == digest
    assert torch.equal(target.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
