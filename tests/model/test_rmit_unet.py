"""Tests of utils/model/rmit_unet.py: the port of the authors' retouch_unet and retouch_discriminator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.model.rmit_unet import (MARGIN, RmitDiscriminator, RmitUNet, _centre_crop, _upsample_2x2, _upsampled_conv,
                                   input_shape_for, l2_penalty, valid_input)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = (96, 104)  # the smallest valid height; a 4 x 12 output keeps CPU tests fast


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_shape(input_shape: tuple[int, int]) -> tuple[int, int]:
    """The reference for the segmenter's output size, counted layer by layer: conv1_0 is 'same'; each level then
    loses 4 to two valid 3x3 convs; pooling floors (Keras 'valid' pooling); each decoder level doubles (2x2
    transposed conv, stride 2) and loses 4 again."""
    def side(n: int) -> int:
        n -= 4  # conv1_1, conv1_2
        for _ in range(3):  # pool1..3, then conv{2,3,4}_1 and conv{2,3,4}_2
            n = n // 2 - 4
        for _ in range(3):  # upool3..1, then dconv{3,2,1}_1 and dconv{3,2,1}_2
            n = 2 * n - 4
        return n

    return side(input_shape[0]), side(input_shape[1])


def upsampled_centre(x: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """The reference for the multi-scale output's upsampled levels: the central ``(height, width)`` of ``x``
    nearest-upsampled by ``factor``, upsampling all of it."""
    return _centre_crop(F.interpolate(x, scale_factor=factor, mode="nearest"), height, width)


# ----------------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------------
def test_the_original_patch_gives_the_original_output_size():
    torch.manual_seed(0)
    model = RmitUNet().eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 256, 128))
    assert logits.shape == (1, 4, 164, 36) and logits.dtype == torch.float32
    assert output_shape((256, 128)) == (164, 36)
    assert MARGIN == RmitUNet.margin == (256 - 164) // 2 == (128 - 36) // 2 == 46


@pytest.mark.parametrize("shape", [SMALL, (104, 96)])
def test_output_shape_is_what_forward_gives(shape):
    torch.manual_seed(0)
    with torch.no_grad():
        logits = RmitUNet(n_classes=3).eval()(torch.randn(2, 3, *shape))
    assert logits.shape == (2, 3, *output_shape(shape))


def test_output_shape_and_input_shape_for_agree():
    for side in range(96, 600, 8):
        out = output_shape((side, 256))
        assert out == (side - 2 * MARGIN, 256 - 2 * MARGIN)
        assert input_shape_for(out) == (side, 256)  # <= the input: nothing smaller gives the same output
    for wanted in range(1, 400):
        side = input_shape_for((wanted, 1))[0]
        assert valid_input((side, side)) and output_shape((side, side))[0] >= wanted
        assert side == 96 or output_shape((side - 8, side - 8))[0] < wanted  # the smallest such input
    assert input_shape_for((496, 512)) == (592, 608)  # a Spectralis B-scan, padded by at least 46 per side


@pytest.mark.parametrize("shape, valid", [
    ((256, 128), True), ((96, 96), True), ((88, 128), False), ((256, 124), False), ((255, 128), False),
    ((256,), False), ((256.5, 128), False), ((0, 128), False)])
def test_valid_input(shape, valid):
    assert valid_input(shape) is valid


def test_shapes_the_network_cannot_take_are_refused():
    with pytest.raises(ValueError, match="multiples of 8 and at least 96; pad the input to input_shape_for"):
        RmitUNet()(torch.zeros(1, 3, 250, 128))
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        RmitUNet()(torch.zeros(1, 1, 256, 128))
    with pytest.raises(ValueError, match="output_shape"):
        input_shape_for((0, 10))


def test_an_odd_skip_loses_its_extra_row_at_the_top_as_the_original_cropping():
    rows = torch.arange(57.0).view(1, 1, 57, 1).expand(1, 1, 57, 25)  # conv3_2 of a 256 x 128 patch: 57 x 25
    cropped = _centre_crop(rows, 48, 16)  # Keras Cropping2D(((5, 4), (5, 4)))
    assert cropped.shape == (1, 1, 48, 16) and cropped[0, 0, 0, 0] == 5 and cropped[0, 0, -1, 0] == 52


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------
def _values_and_gradients(output: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                          upstream: torch.Tensor) -> list[torch.Tensor]:
    return [output, *torch.autograd.grad(output, inputs, upstream)]


@pytest.mark.parametrize("factor, size, crop", [(8, (5, 9), (33, 60)), (8, (6, 6), (48, 48)), (8, (4, 4), (2, 5)),
                                                (4, (7, 6), (25, 21)), (4, (6, 6), (3, 3)), (3, (10, 11), (20, 22)),
                                                (2, (10, 11), (20, 22)), (2, (9, 8), (17, 15))])
def test_upsampled_conv_equals_the_conv_of_the_upsampled_crop(factor, size, crop):
    # values and both gradients, in float64 so that only the order of the sums differs; odd crops start mid-block
    torch.manual_seed(0)
    x = torch.randn(2, 5, *size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(upsampled_centre(x, factor, *crop), weight, padding=1)
    upstream = torch.randn_like(expected)
    got = _upsampled_conv(x, factor, weight, *crop)
    for a, b in zip(_values_and_gradients(got, (x, weight), upstream),
                    _values_and_gradients(expected, (x, weight), upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_upsample_2x2_equals_the_transposed_conv():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(5, 3, 2, stride=2).double()
    x = torch.randn(2, 5, 4, 7, dtype=torch.float64, requires_grad=True)
    expected = layer(x)
    upstream = torch.randn_like(expected)
    inputs = (x, layer.weight, layer.bias)
    for a, b in zip(_values_and_gradients(_upsample_2x2(layer, x), inputs, upstream),
                    _values_and_gradients(expected, inputs, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [False, True])
def test_multi_scale_output_is_the_original_conv_over_the_concatenation(training):
    # seg_out_ as the original builds it: upsample, centre-crop, concatenate (bottleneck first), one 3x3 conv
    torch.manual_seed(0)
    model = RmitUNet().double().train(training)
    levels = [(torch.randn(1, 512, 5, 7), 8), (torch.randn(1, 256, 9, 13), 4), (torch.randn(1, 128, 17, 25), 2)]
    levels = [(level.double().requires_grad_(), factor) for level, factor in levels]
    last = torch.randn(1, 64, 30, 46, dtype=torch.float64, requires_grad=True)
    concatenated = torch.cat([_centre_crop(F.interpolate(level, scale_factor=factor), 30, 46)
                              for level, factor in levels] + [last], dim=1)
    expected = model.out(concatenated)
    upstream = torch.randn_like(expected)
    inputs = (*[level for level, _ in levels], last, model.out.weight, model.out.bias)
    for a, b in zip(_values_and_gradients(model._multi_scale_logits(levels, last), inputs, upstream),
                    _values_and_gradients(expected, inputs, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_segmenter_parameter_count_matches_the_original_layer_list():
    # trainable parameters of retouch_unet: kernel + bias per conv, gamma + beta per batch norm
    original = sum([
        7 * 7 * 3 * 64 + 64,  # conv1_0 (7x7, 'same')
        3 * 3 * 64 * 64 + 64, 3 * 3 * 64 * 64 + 64, 2 * 64,  # conv1_1, conv1_2, bn1
        3 * 3 * 64 * 128 + 128, 3 * 3 * 128 * 128 + 128, 2 * 128,  # conv2_1, conv2_2, bn2
        3 * 3 * 128 * 256 + 256, 3 * 3 * 256 * 256 + 256, 2 * 256,  # conv3_1, conv3_2, bn3
        3 * 3 * 256 * 512 + 512, 3 * 3 * 512 * 512 + 512, 2 * 512,  # conv4_1, conv4_2, bn4
        2 * 2 * 512 * 256 + 256,  # upool3
        3 * 3 * (256 + 256) * 256 + 256, 3 * 3 * 256 * 256 + 256, 2 * 256,  # dconv3_1, dconv3_2, bn3d
        2 * 2 * 256 * 128 + 128,  # upool2
        3 * 3 * (128 + 128) * 128 + 128, 3 * 3 * 128 * 128 + 128, 2 * 128,  # dconv2_1, dconv2_2, bn2d
        2 * 2 * 128 * 64 + 64,  # upool1
        3 * 3 * (64 + 64) * 64 + 64, 3 * 3 * 64 * 64 + 64,  # dconv1_1, dconv1_2 (no batch norm)
        3 * 3 * (512 + 256 + 128 + 64) * 4 + 4,  # seg_out_ on the multi-scale concatenation
    ])
    assert original == 7_779_140
    assert n_parameters(RmitUNet()) == original


def test_discriminator_parameter_count_matches_the_original_layer_list():
    original = sum([
        7 * 7 * 3 * 64 + 64, 3 * 3 * 64 * 64 + 64, 3 * 3 * 64 * 64 + 64, 2 * 64,  # image branch, bn1_
        7 * 7 * 4 * 64 + 64, 3 * 3 * 64 * 64 + 64, 3 * 3 * 64 * 64 + 64, 2 * 64,  # mask branch, bn1_m
        3 * 3 * 128 * 128 + 128, 3 * 3 * 128 * 128 + 128, 2 * 128,  # conv2_1, conv2_2, bn2
        3 * 3 * 128 * 256 + 256, 3 * 3 * 256 * 256 + 256, 2 * 256,  # conv3_1, conv3_2, bn3
        3 * 3 * 256 * 512 + 512, 3 * 3 * 512 * 512 + 512, 2 * 512,  # conv4_1, conv4_2, bn4
        512 * 2 + 2,  # disc_out (Dense)
    ])
    assert n_parameters(RmitDiscriminator()) == original


def test_relu_before_softmax_clips_the_negative_scores():
    torch.manual_seed(0)
    original = RmitUNet(relu_before_softmax=True).eval()
    plain = RmitUNet(relu_before_softmax=False).eval()
    plain.load_state_dict(original.state_dict())
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        clipped, logits = original(x), plain(x)
    assert (logits < 0).any() and clipped.min() >= 0
    assert torch.equal(clipped, logits.clamp(min=0))
    assert not torch.allclose(clipped.softmax(dim=1), logits.softmax(dim=1))


def test_spatial_dropout_acts_in_training_only():
    model = RmitUNet(relu_before_softmax=False)
    # upool3/crop3, upool2/crop2, upool1/crop1, after dconv1_2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)] == [0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.25]
    torch.manual_seed(1)
    x = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        model.train()
        torch.manual_seed(2)
        first = model(x)
        torch.manual_seed(3)
        second = model(x)
        model.eval()
        torch.manual_seed(2)
        evaluated = model(x)
        torch.manual_seed(3)
        again = model(x)
    assert not torch.allclose(first, second)
    assert torch.equal(evaluated, again)


def test_l2_penalty_sums_the_squared_conv_and_dense_kernels_only():
    conv, norm = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
    up, dense = nn.ConvTranspose2d(2, 2, 2, stride=2), nn.Linear(3, 2)
    with torch.no_grad():
        conv.weight.fill_(0.5), conv.bias.fill_(7.0)  # 18 * 0.25 = 4.5
        norm.weight.fill_(3.0)  # batch norm: not regularised
        up.weight.fill_(10.0)  # Deconv2D has no kernel_regularizer in the original
        dense.weight.fill_(-2.0), dense.bias.fill_(5.0)  # 6 * 4 = 24
    model = nn.Sequential(conv, norm, up, dense)
    penalty = l2_penalty(model)
    assert penalty.item() == pytest.approx(1e-4 * (4.5 + 24.0))
    assert l2_penalty(model, weight=0.5).item() == pytest.approx(0.5 * 28.5)
    penalty.backward()
    assert torch.allclose(conv.weight.grad, torch.full_like(conv.weight, 2 * 1e-4 * 0.5))
    assert conv.bias.grad is None and up.weight.grad is None and norm.weight.grad is None
    assert l2_penalty(nn.ReLU()).item() == 0


# ----------------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------------
def test_discriminator_crops_the_patch_to_the_segmenter_window():
    torch.manual_seed(0)
    critic = RmitDiscriminator().eval()
    image = torch.randn(2, 3, 256, 128)
    mask = torch.rand(2, 4, 164, 36).softmax(dim=1)
    with torch.no_grad():
        scores = critic(image, mask)
        cropped = critic(image[..., MARGIN:-MARGIN, MARGIN:-MARGIN], mask)
    assert scores.shape == (2, 2)
    assert torch.equal(scores, cropped)


def test_discriminator_passes_gradient_to_the_mask():
    torch.manual_seed(0)
    critic = RmitDiscriminator()
    mask = torch.rand(2, 4, 164, 36, requires_grad=True)
    critic(torch.randn(2, 3, 164, 36), mask)[:, 1].sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0


def test_discriminator_refuses_inputs_it_cannot_take():
    critic = RmitDiscriminator()
    with pytest.raises(ValueError, match="at least its size"):
        critic(torch.zeros(1, 3, 100, 36), torch.zeros(1, 4, 164, 36))
    with pytest.raises(ValueError, match="expected image"):
        critic(torch.zeros(1, 3, 164, 36), torch.zeros(1, 2, 164, 36))
    with pytest.raises(ValueError, match="too small"):
        critic(torch.zeros(1, 3, 164, 20), torch.zeros(1, 4, 164, 20))
