"""utils/predict/inference.py: neighbours, depth scaling, the network input, whole-volume probabilities, labels,
presence scores and fluid volumes."""


import numpy as np
import pytest
import torch
from skimage.transform import rotate
from torch import nn

import config
from utils.configuration import ConfigError, load_config
from utils.predict import band, inference, tiling
from utils.predict.presence import presence_voxel_count
from utils.predict.settings import InferenceSettings
from utils.model.input_scale import physical_patch_shape
from utils.train.data_pipeline import normalise
from utils.io.mhd_io import Geometry
from utils.model.runtime import Runtime

CPU = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=False)
CPU_NHWC = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**fields):
    """config.py's inference settings with the whole B-scan segmented, and ``fields`` on top."""
    return InferenceSettings(**{"predict_region": "all", **fields})


def _volume_probabilities(model, volume, axial_spacing_mm, settings, batch_size):
    """The whole softmax volume ``(C, z, y, x)`` from :func:`inference.iter_probabilities`."""
    parts = {start: p.numpy() for start, p in inference.iter_probabilities(model, volume, axial_spacing_mm, settings,
                                                                           CPU, batch_size)}
    return np.concatenate([parts[start] for start in sorted(parts)]).transpose(1, 0, 2, 3)


def _pointwise_model(seed=0):
    """A 1x1 convolution: each output pixel a function of its input pixel alone, so tiling must not change it."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, config.N_CLASSES, kernel_size=1).eval()


def test_stack_neighbours_repeats_the_edge_bscans():
    volume = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((4, 2, 3), np.uint8)
    stacked = inference.stack_neighbours(volume, 0, 4)
    assert stacked.shape == (4, 2, 3, 3) and stacked.dtype == np.uint8
    assert stacked[:, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert inference.stack_neighbours(volume, 3, 4)[0, 0, 0].tolist() == [2, 3, 3]
    with pytest.raises(ValueError, match="outside a volume of 4 B-scans"):
        inference.stack_neighbours(volume, 2, 5)


def test_stack_neighbours_with_input_channels_repeat_gives_each_bscan_three_times():
    volume = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((4, 2, 3), np.uint8)
    stacked = inference.stack_neighbours(volume, 1, 4, "repeat")
    assert stacked.shape == (3, 2, 3, 3) and stacked[:, 1, 2].tolist() == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]


@pytest.mark.parametrize("input_channels", ["neighbours", "repeat"])
def test_inference_feeds_the_channels_input_channels_names(input_channels):
    class Recorder(nn.Module):  # a 1x1 convolution that keeps what it was given
        def __init__(self):
            super().__init__()
            self.conv, self.inputs = _pointwise_model(), []

        def forward(self, x):
            self.inputs.append(x.detach().clone())
            return self.conv(x)

    volume = np.arange(1, 4, dtype=np.uint8)[:, None, None] * np.full((3, 64, 64), 40, np.uint8)
    model = Recorder()
    _volume_probabilities(model, volume, 0.0039, _settings(input_channels=input_channels, patch_shape=(64, 64)), 3)
    given = torch.cat(model.inputs)[:, :, 32, 32]  # (B-scan, channel): each B-scan is one intensity
    channels = {"neighbours": [(0, 0, 1), (0, 1, 2), (1, 2, 2)], "repeat": [(0, 0, 0), (1, 1, 1), (2, 2, 2)]}[
        input_channels]
    expected = [[(40.0 * (index + 1) - 128) / 128 for index in bscans] for bscans in channels]
    np.testing.assert_allclose(given.numpy(), expected)



@pytest.mark.parametrize("height, axial_mm, expected", [
    (1024, 0.001953125, 513),  # Cirrus: crop 511 rows -> 256, as training resized its patches
    (496, 0.003872, 492),      # Spectralis: crop 258 -> 256
    (885, 0.0026, 590),        # Topcon: crop 384 -> 256
    (650, 0.0035, 584),        # Topcon 650 rows: crop 285 -> 256
])
def test_depth_scaling_uses_the_training_patch_factor(height, axial_mm, expected):
    settings = InferenceSettings(depth_scale="spacing")
    crop, _ = physical_patch_shape(settings.patch_shape, axial_mm, settings.spectralis_axial_spacing_mm)
    assert inference.depth_scale_factor(axial_mm, settings) == settings.patch_shape[0] / crop
    assert inference.scaled_height(height, axial_mm, settings) == expected


@pytest.mark.parametrize("height, axial_mm, expected", [
    (1024, 0.001953125, 512),  # Cirrus: the original's x2
    (496, 0.003872, 496),      # Spectralis: x1, the original crops exactly the patch height
    (885, 0.0026, round(885 * 256 / round(256 * 0.004 / 0.0026))),
    (700, 0.0035, round(700 * 256 / round(256 * 0.0039 / 0.0035))),  # not in the table: by the spacing
])
def test_depth_scaling_by_the_original_height_table(height, axial_mm, expected):
    assert inference.scaled_height(height, axial_mm, InferenceSettings(depth_scale="height_table")) == expected


def test_depth_scaling_round_trip_gives_back_the_height_and_the_image():
    rows = np.linspace(0, 255, 96, dtype=np.float32)
    images = np.broadcast_to(rows[None, :, None, None], (2, 96, 8, 3)).astype(np.uint8)  # smooth ramp in depth
    scaled = inference.scale_depth(images, 48)
    assert scaled.shape == (2, 48, 8, 3) and scaled.dtype == np.uint8
    back = inference.restore_depth(torch.from_numpy(scaled).permute(0, 3, 1, 2).float(), 96)
    assert back.shape == (2, 3, 96, 8)
    interior = back[:, :, 2:-2].numpy() - images.transpose(0, 3, 1, 2)[:, :, 2:-2]
    assert np.abs(interior).max() <= 2.0  # a linear ramp survives halving and doubling


def test_restored_probabilities_still_sum_to_one():
    probabilities = torch.softmax(torch.randn(2, 4, 7, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    restored = inference.restore_depth(probabilities, 13)
    assert restored.shape == (2, 4, 13, 5)
    torch.testing.assert_close(restored.sum(dim=1), torch.ones(2, 13, 5))


def test_network_input_is_the_training_normalisation_in_either_layout():
    image = np.random.default_rng(0).integers(0, 256, (1, 6, 5, 3), dtype=np.uint8)
    for runtime in (CPU, CPU_NHWC):
        tensor = inference.to_network_input(image, runtime)
        assert tensor.shape == (1, 3, 6, 5) and tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor[0].numpy(), normalise(image[0]))
    assert inference.to_network_input(image, CPU_NHWC).is_contiguous(memory_format=torch.channels_last)


def test_volume_probabilities_are_the_same_whole_or_tiled_and_match_the_labels():
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 256, (3, 70, 90), dtype=np.uint8)
    geometry = Geometry(spacing_mm=(0.01, 0.002, 0.05))  # depth scaled ~0.5 -> 35 rows, padded to 64 x 96
    model = _pointwise_model(3)
    whole_settings = _settings(spectralis_axial_spacing_mm=0.004)
    tiled_settings = _settings(spectralis_axial_spacing_mm=0.004, inference_tile_shape=(32, 64),
                               inference_tile_overlap=8)
    whole = _volume_probabilities(model, volume, geometry.axial_spacing_mm, whole_settings, batch_size=2)
    tiled = _volume_probabilities(model, volume, geometry.axial_spacing_mm, tiled_settings, batch_size=3)
    assert whole.shape == (config.N_CLASSES, 3, 70, 90) and whole.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-5)

    result = inference.predict_volume(model, volume, geometry, whole_settings, CPU, batch_size=2)
    assert result.labels.dtype == np.uint8 and result.labels.shape == volume.shape
    np.testing.assert_array_equal(result.labels, whole.argmax(axis=0))
    k = presence_voxel_count(whole_settings.presence_min_volume_mm3, geometry.voxel_volume_mm3, volume.size)
    for fluid, code in config.FLUIDS.items():
        assert result.presence[fluid] == pytest.approx(np.sort(whole[code].ravel())[-k], abs=1e-6)
    assert result.probabilities is None

    kept = inference.predict_volume(model, volume, geometry, whole_settings, CPU, batch_size=2, keep_probabilities=True)
    np.testing.assert_array_equal(kept.labels, result.labels)
    assert sorted(kept.probabilities) == sorted(config.FLUIDS)
    for fluid, code in config.FLUIDS.items():
        stored = kept.probabilities[fluid]
        assert stored.dtype == np.uint8 and stored.shape == volume.shape
        np.testing.assert_allclose(stored / 255.0, whole[code], atol=1 / 510 + 1e-6)  # round(255 p)


def test_probability_to_uint8_rounds_and_clamps():
    values = torch.tensor([0.0, 1 / 510 - 1e-4, 1 / 510 + 1e-4, 0.5, 1.0, 1.0 + 1e-6, -1e-6])
    assert inference.probability_to_uint8(values).tolist() == [0, 0, 1, 128, 255, 255, 0]


def test_bad_inputs_are_refused():
    settings = _settings()
    with pytest.raises(ValueError, match="uint8 volume"):
        next(inference.iter_probabilities(_pointwise_model(), np.zeros((2, 8, 8), np.uint16), 0.004, settings, CPU, 1))
    with pytest.raises(ValueError, match="INFERENCE_BATCH_SIZE must be >= 1"):
        next(inference.iter_probabilities(_pointwise_model(), np.zeros((2, 8, 8), np.uint8), 0.004, settings, CPU, 0))


def test_fluid_volumes_are_voxel_counts_times_voxel_volume():
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, :3] = config.IRF
    labels[1, 2, 1] = config.PED
    geometry = Geometry(spacing_mm=(0.5, 0.25, 2.0))  # 0.25 mm³ per voxel
    assert inference.fluid_volumes_mm3(labels, geometry, config.FLUIDS) == {"IRF": 0.75, "SRF": 0.0, "PED": 0.25}


def test_arg_max_labels_in_either_layout_take_the_first_of_equal_probabilities():
    probabilities = torch.tensor([[0.1, 0.4, 0.4, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.2, 0.8]])
    probabilities = probabilities.T.reshape(1, 4, 1, 3)
    for tensor in (probabilities, probabilities.contiguous(memory_format=torch.channels_last)):
        labels = inference.arg_max_labels(tensor)
        assert labels.dtype == torch.uint8 and labels.tolist() == [[[1, 0, 3]]]


def test_fluid_threshold_marks_fluid_where_the_fluids_together_reach_it():
    # per pixel (background, IRF, SRF, PED): arg-max background but 0.6 fluid; 0.7 background; a tie of two fluids
    probabilities = torch.tensor([[0.4, 0.3, 0.3, 0.0], [0.7, 0.1, 0.0, 0.2], [0.2, 0.4, 0.4, 0.0],
                                  [0.55, 0.45, 0.0, 0.0]]).T.reshape(1, 4, 1, 4)
    assert inference.thresholded_fluid_labels(probabilities, 0.0).tolist() == [[[0, 0, 1, 0]]]  # the arg-max
    assert inference.thresholded_fluid_labels(probabilities, 0.5).tolist() == [[[1, 0, 1, 0]]]
    assert inference.thresholded_fluid_labels(probabilities, 0.3).tolist() == [[[1, 3, 1, 1]]]
    assert inference.thresholded_fluid_labels(probabilities, 0.7).tolist() == [[[0, 0, 1, 0]]]
    assert inference.thresholded_fluid_labels(probabilities, 0.9).tolist() == [[[0, 0, 0, 0]]]


def test_predict_volume_labels_by_the_fluid_threshold():
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 256, (2, 40, 48), dtype=np.uint8)
    geometry = Geometry(spacing_mm=(0.01, 0.004, 0.05))
    model = _pointwise_model(6)
    whole = _volume_probabilities(model, volume, geometry.axial_spacing_mm, _settings(), batch_size=2)
    for threshold in np.quantile(1.0 - whole[0], [0.3, 0.7]):  # some pixels on each side
        result = inference.predict_volume(model, volume, geometry, _settings(fluid_threshold=float(threshold)), CPU,
                                          batch_size=2)
        expected = np.where(1.0 - whole[0] >= threshold, whole[1:].argmax(axis=0) + 1, 0)
        assert (expected > 0).any() and (expected == 0).any()
        np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_fluid_threshold_outside_zero_to_one_is_refused(value):
    with pytest.raises(ConfigError, match="FLUID_THRESHOLD"):
        load_config([f"FLUID_THRESHOLD={value}"])


class _MarginModel(nn.Module):
    """A pointwise model that, like rmit_unet, drops ``margin`` pixels on each side."""

    margin = 46

    def __init__(self):
        super().__init__()
        self.pointwise = _pointwise_model(4)

    def forward(self, x):
        return self.pointwise(x)[..., self.margin:-self.margin, self.margin:-self.margin]


def test_unpadded_network_output_covers_every_pixel_as_the_pointwise_result():
    images = np.random.default_rng(5).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    padded = inference.network_probabilities(_MarginModel(), images, _settings(unpadded_border="padded"), CPU)
    direct = tiling.forward_probabilities(_pointwise_model(4), inference.to_network_input(images, CPU), CPU)
    assert padded.shape == (2, config.N_CLASSES, 50, 70)
    torch.testing.assert_close(padded, direct, rtol=1e-5, atol=1e-6)


def test_unpadded_network_labels_only_its_output_centre_as_the_original():
    """UNPADDED_BORDER = "background" (the default): the margin at every border is background, the centre is the
    network's own output; images no larger than twice the margin are all background."""
    images = np.random.default_rng(5).integers(0, 256, (2, 150, 170, 3), dtype=np.uint8)
    centre = inference.network_probabilities(_MarginModel(), images, _settings(), CPU)
    direct = tiling.forward_probabilities(_pointwise_model(4), inference.to_network_input(images, CPU), CPU)
    assert centre.shape == (2, config.N_CLASSES, 150, 170)
    torch.testing.assert_close(centre[..., 46:-46, 46:-46], direct[..., 46:-46, 46:-46], rtol=1e-5, atol=1e-6)
    border = torch.ones(150, 170, dtype=torch.bool)
    border[46:-46, 46:-46] = False
    assert (centre[:, 0][:, border] == 1.0).all() and (centre[:, 1:][:, :, border] == 0.0).all()
    small = inference.network_probabilities(_MarginModel(), images[:, :92], _settings(), CPU)
    assert (small[:, 0] == 1.0).all()


def test_band_mode_labels_nothing_outside_the_band():
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 256, (2, 120, 64), dtype=np.uint8)
    band_settings = _settings(predict_region="band", patch_shape=(32, 64), spectralis_axial_spacing_mm=0.004)
    geometry = Geometry(spacing_mm=(0.01, 0.004, 0.05))
    probabilities = _volume_probabilities(_pointwise_model(1), volume, geometry.axial_spacing_mm, band_settings, 2)
    for z in range(2):
        top = band.band_top(band.bscan_roi(volume[z], band_settings), 32, 120, 120)
        outside = np.ones(120, bool)
        outside[top:top + 32] = False
        assert (probabilities[0, z, outside] == 1.0).all()  # background, certain
        assert (probabilities[0, z, top:top + 32] < 1.0).any()  # the network's own scores in the band


def test_flip_tta_averages_the_mirrored_pass():
    images = np.random.default_rng(6).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)

    class LeftRightModel(nn.Module):  # logits depend on the column: the mirrored pass differs
        def forward(self, x):
            columns = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, x.shape[2], -1)
            return torch.cat([columns / 10, x[:, :3]], dim=1)

    model = LeftRightModel()
    plain = inference.network_probabilities(model, images, _settings(), CPU)
    tta = inference.network_probabilities(model, images, _settings(tta_flip=True), CPU)
    mirrored = inference.network_probabilities(model, np.ascontiguousarray(images[:, :, ::-1]), _settings(), CPU)
    torch.testing.assert_close(tta, (plain + mirrored.flip(-1)) / 2)
    assert not torch.allclose(tta, plain)


def test_rotated_images_turn_as_training_rotates():
    images = np.zeros((1, 60, 90, 3), np.uint8)
    images[0, 10:20, 60:70] = 200
    out = inference.rotated_images(images, 20.0)
    expected = rotate(images[0, ..., 0], 20.0, order=1, preserve_range=True, mode="constant")
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.abs(out[0, ..., 0].astype(float) - expected).max() <= 1.0  # the same turn, up to rounding


def test_rotated_back_undoes_the_rotation_and_marks_what_it_covers():
    rows, cols = np.mgrid[0:64, 0:96].astype(np.float32)
    smooth = torch.from_numpy(np.stack([np.sin(rows / 9), np.cos(cols / 13)]))[None]  # (1, 2, 64, 96)
    turned = inference._rotation(smooth, 8.0, mode="bilinear")
    back, covered = inference.rotated_back(turned, 8.0)
    assert back.shape == smooth.shape and covered.shape == (1, 1, 64, 96)
    torch.testing.assert_close(back[..., 12:-12, 12:-12], smooth[..., 12:-12, 12:-12], atol=0.02, rtol=0)
    assert covered[0, 0, 32, 48] == pytest.approx(1.0) and covered[0, 0, 0, 0] < 0.5  # a corner turns out of view


def test_rotation_tta_averages_the_rotated_passes_where_they_reach():
    images = np.random.default_rng(7).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)

    class PlaceModel(nn.Module):  # logits depend on the row and the column: rotated and mirrored passes differ
        def forward(self, x):
            rows = torch.arange(x.shape[2], dtype=x.dtype)[:, None].expand(x.shape[0], 1, -1, x.shape[-1])
            columns = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, x.shape[2], -1)
            return torch.cat([rows / 10, columns / 7, x[:, :2]], dim=1)

    model = PlaceModel()
    plain = inference.network_probabilities(model, images, _settings(), CPU)
    tta = inference.network_probabilities(model, images, _settings(tta_rotate_degrees=(-6.0, 6.0)), CPU)
    torch.testing.assert_close(tta.sum(1), torch.ones_like(tta[:, 0]))  # still probabilities
    assert tta.shape == plain.shape and not torch.allclose(tta, plain)
    # by hand: each rotated pass rotated back, weighted by what it covers, averaged with the plain pass
    total, weight = plain.clone(), torch.ones_like(plain[:, :1])
    for angle in (-6.0, 6.0):
        turned = inference.network_probabilities(model, inference.rotated_images(images, angle), _settings(), CPU)
        back, covered = inference.rotated_back(turned, angle)
        total, weight = total + back * covered, weight + covered
    torch.testing.assert_close(tta, total / weight)
    flipped = inference.network_probabilities(model, images, _settings(tta_rotate_degrees=(6.0,), tta_flip=True),
                                              CPU)
    assert not torch.allclose(flipped, inference.network_probabilities(
        model, images, _settings(tta_rotate_degrees=(6.0,)), CPU))


@pytest.mark.parametrize("value", ["(0.0,)", "(5.0, 5.0)", "(90.0,)", "5.0", "(True,)"])
def test_rotation_tta_refuses_bad_angles(value):
    with pytest.raises(ConfigError, match="TTA_ROTATE_DEGREES"):
        load_config(["PREDICT_REGION=all", f"TTA_ROTATE_DEGREES={value}"])


def test_rotation_tta_refuses_the_band_region():
    with pytest.raises(ConfigError, match="TTA_ROTATE_DEGREES=.*PREDICT_REGION='band'"):
        load_config(["TTA_ROTATE_DEGREES=(-5.0, 5.0)"])
    assert load_config(["PREDICT_REGION=roi", "TTA_ROTATE_DEGREES=(-5.0, 5.0)"]).TTA_ROTATE_DEGREES == (-5.0, 5.0)


def test_rotation_tta_of_an_unpadded_network_keeps_its_border_out():
    """The authors' network labels the border its output cannot reach background (UNPADDED_BORDER="background"): a
    rotated pass's border, turned back, must not outvote the plain pass inside, and the border stays background."""
    margin = 6

    class FluidEverywhere(nn.Module):  # unpadded: its output lacks ``margin`` pixels on each side
        def __init__(self):
            super().__init__()
            self.margin = margin

        def forward(self, x):
            inner = x[:, :1, margin:-margin, margin:-margin]
            return torch.cat([torch.zeros_like(inner), 10 + torch.zeros_like(inner), torch.zeros_like(inner),
                              torch.zeros_like(inner)], dim=1)

    images = np.full((1, 40, 60, 3), 100, np.uint8)
    settings = _settings(tta_rotate_degrees=(-8.0, 8.0), unpadded_border="background")
    with torch.no_grad():
        plain = inference.network_probabilities(FluidEverywhere(), images, _settings(), CPU)
        tta = inference.network_probabilities(FluidEverywhere(), images, settings, CPU)
    inside = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    torch.testing.assert_close(tta[inside], plain[inside], atol=1e-4, rtol=0)  # fluid, as certain as the plain pass
    assert (tta[:, 0, :margin] == 1.0).all() and (tta[:, 0, :, -margin:] == 1.0).all()  # the border background
