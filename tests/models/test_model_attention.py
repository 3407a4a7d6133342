"""The attention blocks against the paper's equations, written out densely and independently here."""

import pytest
import torch
import torch.nn.functional as F

from reid.models.attention import LowRankMap, MutualAttention, SelfAttention, rms_normalize, spatial_attention

N, C, H, W = 2, 6, 5, 3


@pytest.fixture
def f():
    torch.manual_seed(0)
    return torch.randn(N, C, H, W, dtype=torch.float64)


def _randomised(module):
    """Non-zero biases too: the Kaiming init sets them to 0, which would hide a wrong bias term."""
    torch.manual_seed(1)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def literal_self_attention(module: SelfAttention, f):
    """Eqs. 1-4 as printed: dense tensors, convolutions applied with F.conv2d."""
    spa = torch.zeros(N, 1, H, W, dtype=f.dtype)
    for c in range(C):  # eq. 1: mean over the C channels
        spa[:, 0] += f[:, c] / C
    pooled = F.adaptive_avg_pool2d(f, 1)  # eq. 2
    ca = F.conv2d(pooled, module.channel_conv.weight, module.channel_conv.bias)  # eq. 3, (N, C, 1, 1)
    product = spa * ca  # broadcast to (N, C, H, W)
    return F.conv2d(product, module.fuse_conv.weight, module.fuse_conv.bias)  # eq. 4


def test_spatial_attention_is_the_channel_mean(f):
    spa = spatial_attention(f)
    assert spa.shape == (N, 1, H, W)
    for n in range(N):
        for i in range(H):
            for j in range(W):
                assert spa[n, 0, i, j].item() == pytest.approx(sum(f[n, c, i, j].item() for c in range(C)) / C)


def test_channel_attention_is_conv_of_average_pool(f):
    module = _randomised(SelfAttention(C, input_norm="none"))
    expected = F.conv2d(f.mean(dim=(2, 3), keepdim=True), module.channel_conv.weight, module.channel_conv.bias)
    torch.testing.assert_close(module.channel_attention(f), expected.flatten(1))


def test_self_attention_equals_conv_of_broadcast_product(f):
    module = _randomised(SelfAttention(C, input_norm="none"))
    sa = module(f)
    assert sa.dense().shape == (N, C, H, W)
    torch.testing.assert_close(sa.dense(), literal_self_attention(module, f))


def test_mutual_attention_product_and_conv(f):
    sa_module = _randomised(SelfAttention(C, input_norm="none"))
    ma_module = _randomised(MutualAttention(C))
    f2 = torch.randn_like(f)
    sa1, sa2 = sa_module(f), sa_module(f2)
    dense1, dense2 = literal_self_attention(sa_module, f), literal_self_attention(sa_module, f2)
    # eq. 5: before its conv, MA is the element-wise product SA_1 * SA_2
    torch.testing.assert_close((sa1 * sa2).dense(), dense1 * dense2)
    # eq. 6: MA = conv1x1(SA_1 * SA_2)
    expected = F.conv2d(dense1 * dense2, ma_module.conv.weight, ma_module.conv.bias)
    torch.testing.assert_close(ma_module(sa1, sa2).dense(), expected)
    # symmetric in the pair
    torch.testing.assert_close(ma_module(sa2, sa1).dense(), expected)


def test_modulate_is_f_times_ma_plus_f(f):
    sa_module = _randomised(SelfAttention(C, input_norm="none"))
    ma_module = _randomised(MutualAttention(C))
    ma = ma_module(sa_module(f), sa_module(f.flip(0)))
    expected = f * ma.dense() + f  # eqs. 7-8
    torch.testing.assert_close(ma.modulate(f), expected)
    # the same values, and the same layout, for a channels-last feature map
    f_cl = f.contiguous(memory_format=torch.channels_last)
    out_cl = ma.modulate(f_cl)
    torch.testing.assert_close(out_cl, expected)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ma.dense(channels_last=True), ma.dense())


def test_batch_slicing_and_repeat(f):
    sa = _randomised(SelfAttention(C, input_norm="none"))(f)
    torch.testing.assert_close(sa.rows(slice(1, 2)).dense(), sa.dense()[1:2])
    torch.testing.assert_close(sa.repeat(2).dense(), torch.cat([sa.dense(), sa.dense()]))


def test_rms_input_norm_is_the_equations_on_the_normalised_map(f):
    module = _randomised(SelfAttention(C, input_norm="rms"))
    verbatim = _randomised(SelfAttention(C, input_norm="none"))  # the same weights (same seed)
    rms = torch.sqrt((f**2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
    torch.testing.assert_close(rms_normalize(f), f / rms)
    torch.testing.assert_close(module(f).dense(), literal_self_attention(verbatim, f / rms))
    # invariant to the scale of each image's features (up to the 1e-6 guard); the verbatim maps grow with it
    scaled = f * torch.tensor([3.0, 0.2], dtype=f.dtype).view(N, 1, 1, 1)
    torch.testing.assert_close(module(scaled).dense(), module(f).dense(), rtol=1e-3, atol=1e-4)
    assert not torch.allclose(verbatim(scaled).dense(), verbatim(f).dense())


def test_unknown_input_norm_is_named():
    with pytest.raises(ValueError, match="model.attention_norm 'layer'"):
        SelfAttention(C, input_norm="layer")


def test_low_rank_map_rejects_mismatched_factors():
    with pytest.raises(ValueError, match="LowRankMap"):
        LowRankMap(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 2))


def test_shared_maps_are_one_channel_that_rescales_every_channel(f):
    """attention_channels "shared": eq. 4 and eq. 6 give one H x W map; F = f * MA + f broadcasts it."""
    sa_module = _randomised(SelfAttention(C, input_norm="none", maps="shared"))
    ma_module = _randomised(MutualAttention(C, maps="shared"))
    assert sa_module.fuse_conv.out_channels == 1 and ma_module.conv.weight.shape == (1, 1, 1, 1)
    f2 = torch.randn_like(f)
    dense1, dense2 = literal_self_attention(sa_module, f), literal_self_attention(sa_module, f2)
    assert dense1.shape == (N, 1, H, W)
    torch.testing.assert_close(sa_module(f).dense(), dense1)
    expected_ma = F.conv2d(dense1 * dense2, ma_module.conv.weight, ma_module.conv.bias)
    ma = ma_module(sa_module(f), sa_module(f2))
    torch.testing.assert_close(ma.dense(), expected_ma)
    expected = f * expected_ma.expand(N, C, H, W) + f  # eqs. 7-8, the same weight for every channel
    torch.testing.assert_close(ma.modulate(f), expected)
    torch.testing.assert_close(ma.modulate(f.contiguous(memory_format=torch.channels_last)), expected)
    with pytest.raises(ValueError, match="model.attention_channels 'one' is unknown"):
        SelfAttention(C, maps="one")
