"""pair_loss against cross-entropies worked out by hand."""

import math

import pytest
import torch

from reid.models import pair_loss


def cross_entropy_by_hand(row, label):
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))


LOGITS1 = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
LOGITS2 = [[0.0, 1.0, 0.0], [-2.0, 0.0, 3.0]]
VERIF = [[0.2, 1.0], [1.5, -0.5]]
PID1, PID2, SAME = [0, 2], [1, 2], [False, True]


def output(verif=True):
    return {
        "logits1": torch.tensor(LOGITS1),
        "logits2": torch.tensor(LOGITS2),
        "verif_logits": torch.tensor(VERIF) if verif else None,
    }


@pytest.mark.parametrize("weight", [0.5, 0.25])
def test_matches_hand_computation(weight):
    losses = pair_loss(output(), torch.tensor(PID1), torch.tensor(PID2), torch.tensor(SAME), verification_weight=weight)
    id_terms = [cross_entropy_by_hand(r, y) for r, y in zip(LOGITS1 + LOGITS2, PID1 + PID2)]
    verif_terms = [cross_entropy_by_hand(r, int(y)) for r, y in zip(VERIF, SAME)]
    expected_id, expected_verif = sum(id_terms) / 4, sum(verif_terms) / 2
    assert losses["id"].item() == pytest.approx(expected_id, rel=1e-6)
    assert losses["verif"].item() == pytest.approx(expected_verif, rel=1e-6)
    assert losses["total"].item() == pytest.approx(expected_id + weight * expected_verif, rel=1e-6)
    # argmax: [0, 0 (tie -> first), 1, 2] vs labels [0, 2, 1, 2] -> 3 of 4; verification [1, 0] vs [0, 1] -> 0
    assert losses["id_acc"].item() == pytest.approx(0.75)
    assert losses["verif_acc"].item() == 0.0


def test_identification_only_has_zero_verification_terms():
    losses = pair_loss(output(verif=False), torch.tensor(PID1), torch.tensor(PID2), torch.tensor(SAME))
    assert losses["verif"].item() == 0.0 and losses["verif_acc"].item() == 0.0
    assert losses["total"].item() == losses["id"].item()


def test_gradient_flows_to_both_heads():
    out = {k: v.requires_grad_() for k, v in output().items()}
    pair_loss(out, torch.tensor(PID1), torch.tensor(PID2), torch.tensor([1, 0]))["total"].backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in out.values())


@pytest.mark.parametrize(
    "pid1, pid2, same, message",
    [
        ([0, 3], [1, 2], [0, 1], "labels must lie in 0..2"),
        ([0, -1], [1, 2], [0, 1], "labels must lie in 0..2"),
        ([0], [1, 2], [0, 1], "pid1 has shape"),
        ([0, 1], [1, 2], [0, 2], "same must hold 0/1"),
        ([0, 1], [1, 2], [0], "same has shape"),
    ],
)
def test_bad_labels_are_refused(pid1, pid2, same, message):
    with pytest.raises(ValueError, match=message):
        pair_loss(output(), torch.tensor(pid1), torch.tensor(pid2), torch.tensor(same))


def test_verification_head_batchnorm_option():
    from reid.models import build_model

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_bn = build_model("baseline", 4, backbone="resnet18", embedding_dim=8, verification_norm="batchnorm")
        plain = build_model("baseline", 4, backbone="resnet18", embedding_dim=8, verification_norm="none")
    assert isinstance(with_bn.verifier[0], torch.nn.BatchNorm1d)
    assert isinstance(plain.verifier, torch.nn.Linear)
    # the batch norm makes the verification logits independent of the scale of (e1 - e2)^2
    f = torch.rand(16, 8)
    with_bn.train()
    assert torch.allclose(with_bn.verifier(f), with_bn.verifier(100 * f), atol=1e-3)
    import pytest

    with pytest.raises(ValueError, match="verification_norm"):
        build_model("baseline", 4, backbone="resnet18", embedding_dim=8, verification_norm="layer")
