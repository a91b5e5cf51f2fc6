import numpy as np
import pytest
import torch

from utils.configuration import ConfigError, load_config
import random

from utils.train.data_pipeline import (LoadedSlice, SliceRecord, TrainingDataSettings, augment_slice,
                                       augmented_copies, choose_validation_records, elastic_displacement,
                                       epoch_records, load_slice, read_split_slices, slice_records,
                                       training_batches, upsample_by_label, validation_batches)
from utils.io.files import read_png

SMALL = ["PATCH_SHAPE=(128, 64)", "PATCH_BORDER=8", "BATCH_SIZE=6", "VAL_BSCANS=8"]
settings_of = TrainingDataSettings.from_config  # a config's training-data settings, as train.py builds them once


@pytest.fixture
def cfg():
    return load_config(SMALL)


@pytest.fixture
def train_records(prepared_work, cfg):
    return slice_records(read_split_slices(prepared_work, "train", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS), cfg.FLUIDS)


def test_load_slice_stacks_neighbours_and_repeats_edges(prepared_work, cfg, train_records):
    first = next(record for record in train_records if record.z == 0)
    assert isinstance(first, SliceRecord) and first.vendor in {"Cirrus", "Spectralis", "Topcon"}
    settings = TrainingDataSettings.from_config(cfg)
    loaded = load_slice(first, prepared_work, settings)
    assert isinstance(loaded, LoadedSlice)
    image, mask, roi = loaded.image, loaded.mask, loaded.roi
    bscan = lambda z: read_png(prepared_work / first.root / "oct" / f"{first.case}_{z:03d}.png")
    assert image.shape == mask.shape + (3,) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], bscan(0))  # edge: B-scan 0 repeated
    np.testing.assert_array_equal(image[..., 1], bscan(0))
    np.testing.assert_array_equal(image[..., 2], bscan(1))
    assert set(np.unique(roi)) <= {0, 1} and loaded.scaling_spacing_mm == first.spacing_y_mm
    assert [loaded.is_irf, loaded.is_srf, loaded.is_ped] == [int((mask == code).any()) for code in (1, 2, 3)]
    last = load_slice(first._replace(z=first.n_slices - 1), prepared_work, settings).image
    np.testing.assert_array_equal(last[..., 2], bscan(first.n_slices - 1))


def test_load_slice_repeats_the_bscan_itself_with_input_channels_repeat(prepared_work, train_records):
    record = next(record for record in train_records if 0 < record.z < record.n_slices - 1)
    repeated = load_slice(record, prepared_work, TrainingDataSettings(input_channels="repeat"))
    neighbours = load_slice(record, prepared_work, TrainingDataSettings(input_channels="neighbours"))
    for channel in range(3):  # B-scan z in every channel; the mask and ROI are the same B-scan's
        np.testing.assert_array_equal(repeated.image[..., channel], neighbours.image[..., 1])
    np.testing.assert_array_equal(repeated.mask, neighbours.mask)
    assert not np.array_equal(neighbours.image[..., 0], neighbours.image[..., 1])  # the neighbour differs


def test_training_data_settings_are_the_config_settings_of_the_same_names():
    cfg = load_config(SMALL + ["FLIP_PROB=0.25", "SLICE_ROI_FOLDER=masks_roi", "VAL_FRESH_PATCHES=False"])
    settings = TrainingDataSettings.from_config(cfg)
    assert settings.flip_prob == 0.25 and settings.batch_size == 6 and tuple(settings.patch_shape) == (128, 64)
    assert settings.slice_layout.slice_roi_folder == "masks_roi" and settings.val_fresh_patches is False
    assert TrainingDataSettings.from_config(load_config([])) == TrainingDataSettings()  # config.py's defaults


def test_training_batches_shape_dtype_range_and_seed(prepared_work, cfg, train_records):
    first = next(training_batches(train_records, prepared_work, settings_of(cfg), seed=5))
    again = next(training_batches(train_records, prepared_work, settings_of(cfg), seed=5))
    other = next(training_batches(train_records, prepared_work, settings_of(cfg), seed=6))
    images, masks = first
    assert images.shape == (6, 3, 128, 64) and images.dtype == torch.float32
    assert masks.shape == (6, 128, 64) and masks.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() < 1.0
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(images, again[0]) and torch.equal(masks, again[1])
    assert not torch.equal(images, other[0])


def test_patches_without_fluid_are_dropped(prepared_work, train_records):
    cfg = load_config(SMALL + ["EMPTY_PATCH_DROP_PROB=1.0"])
    batches = training_batches(train_records, prepared_work, settings_of(cfg), seed=1)
    for _ in range(3):
        _, masks = next(batches)
        inner = masks[:, 8:-8, 8:-8]
        assert all(bool((mask > 0).any()) for mask in inner)


def test_replace_augmentation_flips_image_and_masks_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:8, 2:6] = 2
    roi = (mask > 0).astype(np.uint8)
    sample = LoadedSlice(image, mask, roi, 0, 1, 0, 0.0039)
    no_scale = {"scale_prob": 0.0, "scale_range": (0.8, 1.25), "scale_anisotropic": False}
    out = augment_slice(sample, rng, flip_prob=1.0, rotate_prob=0.0, rotate_max_degrees=10.0, **no_scale)
    np.testing.assert_array_equal(out.image, image[:, ::-1])
    np.testing.assert_array_equal(out.mask, mask[:, ::-1])
    rotated = augment_slice(sample, rng, flip_prob=0.0, rotate_prob=1.0, rotate_max_degrees=10.0, **no_scale)
    assert set(np.unique(rotated.mask)) <= {0, 2} and rotated.image.dtype == np.uint8
    assert isinstance(rotated, LoadedSlice) and rotated[3:] == sample[3:]


def _records(n_with_fluid: int, n_without: int) -> list[SliceRecord]:
    return [SliceRecord("c", "slices/c", z, 40, int(z < n_with_fluid), 0.0039, "Spectralis")
            for z in range(n_with_fluid + n_without)]


@pytest.mark.parametrize("n_with_fluid, n_without, expected_with_fluid", [
    (10, 10, 4),  # half of 8
    (2, 20, 2),  # all there are; the rest without fluid
    (20, 1, 7),  # one without fluid is all there is; the rest with fluid
])
def test_validation_choice_is_fixed_and_half_with_fluid_where_possible(n_with_fluid, n_without,
                                                                       expected_with_fluid):
    records = _records(n_with_fluid, n_without)
    chosen = choose_validation_records(records, 8, seed=0)
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert sum(record.has_fluid for record in chosen) == expected_with_fluid
    assert chosen == choose_validation_records(records, 8, seed=0)
    assert chosen != choose_validation_records(_records(n_with_fluid, n_without), 8, seed=1)


def test_validation_batches_are_fixed(prepared_work):
    cfg = load_config(SMALL + ["VAL_FRESH_PATCHES=False"])
    records = slice_records(read_split_slices(prepared_work, "val", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS), cfg.FLUIDS)
    first = validation_batches(records, prepared_work, settings_of(cfg), seed=0)
    second = validation_batches(records, prepared_work, settings_of(cfg), seed=0)
    assert len(first) == len(second) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_ranks_and_workers_draw_different_patches(prepared_work, cfg, train_records):
    from utils.train.data_pipeline import PatchBatches

    settings = TrainingDataSettings.from_config(cfg)
    rank0 = next(iter(PatchBatches(train_records, prepared_work, settings, seed=0, rank=0)))
    rank1 = next(iter(PatchBatches(train_records, prepared_work, settings, seed=0, rank=1)))
    again = next(iter(PatchBatches(train_records, prepared_work, settings, seed=0, rank=0)))
    resumed = next(iter(PatchBatches(train_records, prepared_work, settings, seed=0, rank=0, start_epoch=3)))
    assert torch.equal(rank0[0], again[0])
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[0], resumed[0])


def _batches(iterable) -> list[torch.Tensor]:
    return [images for images, _ in iterable]


def _same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) > 0 and all(torch.equal(a, b) for a, b in zip(first, second))


def test_one_pass_mode_draws_the_next_epoch_at_each_iteration(prepared_work, cfg, train_records):
    from utils.train.data_pipeline import PatchBatches

    settings = TrainingDataSettings.from_config(cfg)
    passes = PatchBatches(train_records, prepared_work, settings, seed=0, start_epoch=2, endless=False)
    first, second = _batches(passes), _batches(passes)
    assert _same(first, _batches(PatchBatches(train_records, prepared_work, settings, seed=0, start_epoch=2,
                                              endless=False)))
    assert _same(second, _batches(PatchBatches(train_records, prepared_work, settings, seed=0, start_epoch=3,
                                               endless=False)))
    assert not _same(first, second)


def test_a_persistent_worker_gives_the_same_passes_as_the_training_process(prepared_work, cfg, train_records):
    """One loader for the whole run: its worker process (started once) draws pass after pass as the training
    process itself would, epoch by epoch."""
    from utils.train.data_pipeline import PatchBatches, training_loader

    loader = training_loader(train_records, prepared_work, settings_of(cfg), seed=0, start_epoch=1, workers=1,
                             endless=False)
    in_worker = [_batches(loader), _batches(loader)]
    settings = TrainingDataSettings.from_config(cfg)
    expected = [_batches(PatchBatches(train_records, prepared_work, settings, seed=0, start_epoch=epoch,
                                      endless=False)) for epoch in (1, 2)]
    assert _same(in_worker[0], expected[0]) and _same(in_worker[1], expected[1])


def test_loader_workers_auto_choice():
    from utils.train.data_pipeline import loader_workers

    assert loader_workers(-1, "cpu") == 0
    assert 1 <= loader_workers(-1, "cuda") <= 8
    assert loader_workers(-1, "cuda", processes_per_node=64) == 1
    assert loader_workers(3, "cpu") == 3


# ----------------------------------------------------------------------------------------------------------------
# The original's augmentation: copies added to the stream
# ----------------------------------------------------------------------------------------------------------------
def _asymmetric_slice() -> LoadedSlice:
    """A (24, 32) slice whose image holds only 0, 100 and 200 (left half bright) and whose mask holds 0 and 2."""
    rng = np.random.default_rng(3)
    image = rng.choice(np.array([0, 100], np.uint8), (24, 32, 3))
    image[:, :16] = 200
    mask = np.zeros((24, 32), np.uint8)
    mask[8:16, 2:10] = 2
    return LoadedSlice(image, mask, (mask > 0).astype(np.uint8), 0, 1, 0, 0.0039)


def test_augmented_copies_with_certain_flip_and_rotation_are_four():
    sample = _asymmetric_slice()
    out = augmented_copies(sample, np.random.default_rng(2), flip_prob=1.0, rotate_prob=1.0,
                           rotate_max_degrees=10.0)  # seed 2: angles of 8.1 and 6.0 degrees
    assert len(out) == 4
    original, rotated, flipped, rotated_flipped = out
    assert original is sample
    np.testing.assert_array_equal(flipped.image, sample.image[:, ::-1])
    np.testing.assert_array_equal(flipped.mask, sample.mask[:, ::-1])
    np.testing.assert_array_equal(flipped.roi, sample.roi[:, ::-1])
    for copy in (rotated, rotated_flipped):
        assert copy.image.dtype == np.uint8 and copy.image.shape == sample.image.shape
        assert not np.array_equal(copy.image, sample.image) and not np.array_equal(copy.image, flipped.image)
        assert set(np.unique(copy.image)) <= {0, 100, 200}  # nearest neighbour: no blended values
        assert set(np.unique(copy.mask)) <= {0, 2} and set(np.unique(copy.roi)) <= {0, 1}
        np.testing.assert_array_equal(copy.roi, copy.mask > 0)  # mask and ROI rotated together
    assert all(isinstance(copy, LoadedSlice) and copy[3:] == sample[3:] for copy in out)
    # the second rotated copy is of the flipped slice: its bright half is on the right
    assert rotated.image[:, :16].mean() > rotated.image[:, 16:].mean()
    assert rotated_flipped.image[:, 16:].mean() > rotated_flipped.image[:, :16].mean()


def test_augmented_copies_without_flip_or_rotation_are_the_slice_alone():
    sample = _asymmetric_slice()
    for seed in range(5):
        out = augmented_copies(sample, np.random.default_rng(seed), flip_prob=0.0, rotate_prob=0.0,
                               rotate_max_degrees=10.0)
        assert len(out) == 1 and out[0] is sample


def test_augmented_copies_on_average_are_2_25_with_even_odds():
    sample = LoadedSlice(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8),
                         0, 0, 0, 0.0039)
    rng = np.random.default_rng(0)
    counts = np.array([len(augmented_copies(sample, rng, flip_prob=0.5, rotate_prob=0.5, rotate_max_degrees=10.0))
                       for _ in range(2000)])
    assert set(counts.tolist()) == {1, 2, 3, 4}
    assert abs(counts.mean() - (1 + 0.5) * (1 + 0.5)) < 0.1  # standard error ~0.02


# ----------------------------------------------------------------------------------------------------------------
# Stratification of a pass
# ----------------------------------------------------------------------------------------------------------------
def _vendor_records() -> list[SliceRecord]:
    sizes = {"Cirrus": 5, "Spectralis": 2, "Topcon": 1}
    return [SliceRecord(f"{vendor}{z}", f"slices/{vendor}", z, 10, z % 2, 0.0039, vendor)
            for vendor, n in sizes.items() for z in range(n)]


def test_upsample_by_label_brings_every_vendor_to_the_largest_group():
    records = _vendor_records()
    out = upsample_by_label(records, "vendor", random.Random(0))
    assert len(out) == 3 * 5
    assert {vendor: [r.vendor for r in out].count(vendor) for vendor in ("Cirrus", "Spectralis", "Topcon")} == \
        {"Cirrus": 5, "Spectralis": 5, "Topcon": 5}
    assert set(out) == set(records)  # every record of every group appears, nothing else
    assert sorted(r for r in out if r.vendor == "Cirrus") == sorted(r for r in records if r.vendor == "Cirrus")
    spectralis = [r for r in out if r.vendor == "Spectralis"]
    assert sorted(spectralis.count(r) for r in set(spectralis)) == [2, 3]  # cycled, as evenly as possible
    assert out == upsample_by_label(records, "vendor", random.Random(0))
    assert out != upsample_by_label(records, "vendor", random.Random(1))
    assert upsample_by_label([], "vendor", random.Random(0)) == []


def test_epoch_records_by_vendor_up_samples_and_by_fluid_down_samples():
    records = _vendor_records()
    by_vendor = epoch_records(records, "vendor", random.Random(0))
    assert by_vendor == upsample_by_label(records, "vendor", random.Random(0))
    records = _records(40, 10)
    out = epoch_records(records, "fluid", random.Random(0))
    without = [r for r in out if not r.has_fluid]
    assert sorted(without) == [r for r in records if not r.has_fluid]  # the smallest group is kept whole, once each
    assert 3 <= sum(r.has_fluid for r in out) <= 20  # the larger one down-sampled to about its size (expected 10)
    assert len(set(out)) == len(out) and set(out) <= set(records)
    assert all(isinstance(r, SliceRecord) for r in out)  # through nutsml's Stratify, which takes a column index
    assert out == epoch_records(records, "fluid", random.Random(0))
    assert out != sorted(out)  # shuffled


# ----------------------------------------------------------------------------------------------------------------
# One pass, and validation
# ----------------------------------------------------------------------------------------------------------------
def test_one_pass_ends_and_endless_goes_on(prepared_work, train_records):
    cfg = load_config(SMALL + ["EMPTY_PATCH_DROP_PROB=0.0", "FLIP_PROB=0.0", "ROTATE_PROB=0.0"])
    records = [r for r in train_records if r.vendor == "Spectralis"][:3]  # one vendor: the pass is these 3 B-scans
    one_pass = list(training_batches(records, prepared_work, settings_of(cfg), seed=0, endless=False))
    n_patches = sum(len(masks) for _, masks in one_pass)
    assert 0 < n_patches <= 3 * (cfg.PATCHES_PER_BSCAN + int(cfg.RANDOM_PATCH_SHARE * cfg.PATCHES_PER_BSCAN))
    assert all(len(masks) == cfg.BATCH_SIZE for _, masks in one_pass[:-1])
    endless = training_batches(records, prepared_work, settings_of(cfg), seed=0, endless=True)
    assert len([next(endless) for _ in range(len(one_pass) + 2)]) == len(one_pass) + 2
    assert list(training_batches([], prepared_work, settings_of(cfg), seed=0, endless=True)) == []


def _count_patches(batches) -> tuple[int, int]:
    """(patches, patches without fluid away from the 8-pixel border)."""
    masks = torch.cat([masks for _, masks in batches])
    empty = sum(not bool((mask[8:-8, 8:-8] > 0).any()) for mask in masks)
    return len(masks), empty


def test_validation_drops_empty_patches_only_when_asked(prepared_work):
    whole = SMALL + ["DROP_PARTIAL_BATCH=False"]  # every patch counted
    drop = load_config(whole + ["EMPTY_PATCH_DROP_PROB=1.0", "DROP_EMPTY_IN_VALIDATION=True"])
    keep = load_config(whole + ["EMPTY_PATCH_DROP_PROB=1.0", "DROP_EMPTY_IN_VALIDATION=False"])
    none_dropped = load_config(whole + ["EMPTY_PATCH_DROP_PROB=0.0", "DROP_EMPTY_IN_VALIDATION=True"])
    records = slice_records(read_split_slices(prepared_work, "val", drop.SPLIT_SLICES_CSV, drop.FLUIDS), drop.FLUIDS)
    n_drop, empty_drop = _count_patches(validation_batches(records, prepared_work, settings_of(drop), seed=0))
    n_keep, empty_keep = _count_patches(validation_batches(records, prepared_work, settings_of(keep), seed=0))
    assert empty_drop == 0 and n_drop > 0
    assert empty_keep > 0 and n_keep == n_drop + empty_keep
    none_dropped_batches = validation_batches(records, prepared_work, settings_of(none_dropped), seed=0)
    assert _count_patches(none_dropped_batches) == (n_keep, empty_keep)


def test_intensity_augmentation_changes_the_look_but_not_the_layout():
    from utils.train.data_pipeline import intensity_augment

    rng = np.random.default_rng(0)
    image = np.repeat(np.linspace(20, 200, 40 * 30).reshape(40, 30, 1), 3, axis=2).astype(np.uint8)
    outputs = [intensity_augment(image, rng, gamma=2.0, contrast=0.5, speckle_looks=4.0) for _ in range(20)]
    assert all(out.shape == image.shape and out.dtype == np.uint8 for out in outputs)
    assert sum(not np.array_equal(out, image) for out in outputs) >= 15  # 7/8 of draws change something
    for out in outputs:  # the same transform for the three channels (identical here)
        np.testing.assert_array_equal(out[..., 0], out[..., 1])
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
    smooth = [out for out in outputs if np.corrcoef(out[..., 0].ravel(), image[..., 0].ravel())[0, 1] > 0.99]
    assert smooth  # without speckle the ramp stays a monotone ramp
    for out in smooth:
        assert (np.diff(out[..., 0].ravel().astype(int)) >= -1).all()


def test_intensity_augmentation_is_off_by_default_and_on_when_set(prepared_work, train_records):
    cfg = load_config(SMALL + ["FLIP_PROB=0.0", "ROTATE_PROB=0.0"])
    on = load_config(SMALL + ["FLIP_PROB=0.0", "ROTATE_PROB=0.0", "INTENSITY_AUGMENT=True"])
    plain = next(training_batches(train_records, prepared_work, settings_of(cfg), seed=3))
    again = next(training_batches(train_records, prepared_work, settings_of(cfg), seed=3))
    varied = next(training_batches(train_records, prepared_work, settings_of(on), seed=3))
    assert torch.equal(plain[0], again[0])
    assert not torch.equal(plain[0], varied[0])


def test_blank_columns_are_marked_out_of_the_targets_as_the_slice_is_read(prepared_work, train_records):
    import config
    from utils.train.data_pipeline import collate, ignore_blank_columns
    image = np.full((4, 5, 3), 90, np.uint8)
    image[:, 0, 1] = 0  # column 0 of the B-scan itself has no signal (its neighbours' do)
    image[1, 3] = 0  # one dark pixel: the column still has signal
    mask = np.ones((4, 5), np.uint8)
    marked = ignore_blank_columns(image, mask, config.IGNORE_LABEL)
    assert (marked[:, 0] == config.IGNORE_LABEL).all() and (marked[:, 1:] == 1).all() and (mask == 1).all()
    _, masks = collate([LoadedSlice(image, marked, mask, 1, 0, 0, 0.0039)])
    assert masks.dtype == torch.int64 and (masks[0, :, 0] == config.IGNORE_LABEL).all()
    record = train_records[0]
    plain = load_slice(record, prepared_work, TrainingDataSettings(blank_columns_ignored=False))
    blanked = load_slice(record, prepared_work, TrainingDataSettings(blank_columns_ignored=True))
    assert np.array_equal(blanked.mask, ignore_blank_columns(plain.image, plain.mask, config.IGNORE_LABEL))
    # --set IGNORE_LABEL reaches the marks
    given = settings_of(load_config(SMALL + ["BLANK_COLUMNS_IGNORED=True", "IGNORE_LABEL=200"]))
    assert given.ignore_label == 200
    assert (ignore_blank_columns(image, mask, given.ignore_label)[:, 0] == 200).all()
    assert np.array_equal(load_slice(record, prepared_work, given).mask, ignore_blank_columns(plain.image, plain.mask,
                                                                                              200))


def test_batch_norm_reestimation_is_the_average_over_its_batches():
    """Momentum None: the running mean after re-estimation is the mean of the batches' means, whatever it was."""
    from utils.model.runtime import Runtime
    from utils.train.loop import reestimate_batch_norms
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(2, momentum=0.01))
    model[0].running_mean.fill_(100.0)
    batches = iter([(torch.full((1, 2, 3, 3), float(v)), None) for v in (1.0, 3.0, 8.0)])
    runtime = Runtime(torch.device("cpu"), None, False, 0, 1, 0)
    model.eval()
    assert reestimate_batch_norms(model, batches, 2, runtime) == 2
    assert model[0].running_mean.tolist() == pytest.approx([2.0, 2.0])
    assert model[0].momentum == 0.01 and not model.training
    assert next(batches)[0][0, 0, 0, 0] == 8.0  # only the batches asked for were drawn


def _earlier_pipeline(records, work_dir, cfg, seed):
    """The pipeline's mixing before the original's became the default (kept here as the reference): the kept
    patches shuffled in a buffer of 4 x BATCH_SIZE, nothing before, partial batches kept."""
    from nutsflow import Chunk, Filter, Map, Shuffle
    from utils.train import data_pipeline as dp
    rand, rng = random.Random(seed), np.random.default_rng(seed)
    settings = TrainingDataSettings.from_config(cfg)
    return iter(records >> dp._passes(cfg.STRATIFY_BY, rand, True) >> Map(lambda r: load_slice(r, work_dir, settings))
                >> dp._augmented(rng, settings) >> dp._patch_nut(settings, rng)
                >> Filter(lambda p: dp._has_fluid(p) or rand.random() < 1.0 - cfg.EMPTY_PATCH_DROP_PROB)
                >> Shuffle(4 * cfg.BATCH_SIZE, rand=rand) >> Chunk(cfg.BATCH_SIZE, list) >> Map(dp.collate))


def test_the_earlier_mixing_settings_give_the_earlier_batches(prepared_work, train_records):
    """The presets measured with the earlier mixing keep their exact batches through these four settings."""
    earlier = load_config(SMALL + ["BSCAN_SHUFFLE_BUFFER=0", "PATCH_SHUFFLE_BUFFER=0", "KEPT_PATCH_SHUFFLE_BUFFER=24",
                                   "DROP_PARTIAL_BATCH=False"])
    ours, reference = training_batches(train_records, prepared_work, settings_of(earlier), seed=4), \
        _earlier_pipeline(train_records, prepared_work, earlier, seed=4)
    for _ in range(3):
        (images, masks), (ref_images, ref_masks) = next(ours), next(reference)
        assert torch.equal(images, ref_images) and torch.equal(masks, ref_masks)


def test_the_original_mixing_drops_a_partial_last_batch(prepared_work, cfg, train_records):
    one_pass = list(training_batches(train_records[:3], prepared_work, settings_of(cfg), seed=0, endless=False))
    assert one_pass and all(len(masks) == cfg.BATCH_SIZE for _, masks in one_pass)
    kept = load_config(SMALL + ["DROP_PARTIAL_BATCH=False"])
    sizes = [len(masks) for _, masks in training_batches(train_records[:3], prepared_work, settings_of(kept), seed=0,
                                                          endless=False)]
    assert sum(sizes) >= sum(len(masks) for _, masks in one_pass) and all(size <= kept.BATCH_SIZE for size in sizes)


def test_validation_as_the_original_takes_every_bscan_with_fresh_patches_each_epoch(prepared_work):
    cfg = load_config(SMALL + ["VAL_BSCANS=0", "DROP_EMPTY_IN_VALIDATION=False"])
    records = slice_records(read_split_slices(prepared_work, "val", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS), cfg.FLUIDS)
    assert choose_validation_records(records, 0, seed=0) == sorted(records)
    first, again, second = (list(validation_batches(records, prepared_work, settings_of(cfg), seed=0, epoch=epoch))
                            for epoch in (1, 1, 2))
    n_patches = sum(len(masks) for _, masks in first)
    partial = load_config(SMALL + ["VAL_BSCANS=0", "DROP_EMPTY_IN_VALIDATION=False", "DROP_PARTIAL_BATCH=False"])
    n_all = sum(len(masks) for _, masks in validation_batches(records, prepared_work, settings_of(partial), seed=0,
                                                              epoch=1))
    assert n_all >= len(records) and n_patches == n_all // cfg.BATCH_SIZE * cfg.BATCH_SIZE  # partial batch dropped
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))  # seeded by the epoch
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, second))  # new patches the next epoch
    fixed = load_config(SMALL + ["VAL_FRESH_PATCHES=False"])
    assert isinstance(validation_batches(records, prepared_work, settings_of(fixed), seed=0), list)


def test_scale_augmentation_magnifies_image_and_masks_about_the_centre():
    image = np.zeros((41, 61, 3), np.uint8)
    image[18:23, 28:33] = 200
    mask = (image[..., 0] > 0).astype(np.uint8) * 2
    sample = LoadedSlice(image, mask, (mask > 0).astype(np.uint8), 0, 1, 0, 0.0039)
    no_flip_or_rotation = {"flip_prob": 0.0, "rotate_prob": 0.0, "rotate_max_degrees": 10.0}
    out = augment_slice(sample, np.random.default_rng(0), scale_prob=1.0, scale_range=(2.0, 2.0),
                        scale_anisotropic=False, **no_flip_or_rotation)
    assert out.image.shape == image.shape and out.image.dtype == np.uint8 and out[3:] == sample[3:]
    rows, cols = np.nonzero(out.mask)
    assert set(np.unique(out.mask)) == {0, 2}
    # 5 x 5 pixels about (20, 30) become 9-11 x 9-11 about the same centre
    assert 9 <= rows.max() - rows.min() + 1 <= 11 and 9 <= cols.max() - cols.min() + 1 <= 11
    assert abs((rows.min() + rows.max()) / 2 - 20) <= 0.5 and abs((cols.min() + cols.max()) / 2 - 30) <= 0.5
    bright, marked = out.image[..., 1] >= 100, out.mask > 0  # the image bilinear, the mask nearest: the same square
    assert (bright & marked).sum() / (bright | marked).sum() > 0.8
    shapes = set()
    for seed in range(5):
        rows, cols = np.nonzero(augment_slice(sample, np.random.default_rng(seed), scale_prob=1.0,
                                              scale_range=(0.5, 2.0), scale_anisotropic=True,
                                              **no_flip_or_rotation).mask)
        shapes.add((rows.max() - rows.min(), cols.max() - cols.min()))
    assert any(height != width for height, width in shapes)


def test_scale_augmentation_needs_the_replace_augmentation():
    with pytest.raises(ConfigError, match="SCALE_PROB=0.5: expected 0 with AUGMENT='rmit'"):
        load_config(["SCALE_PROB=0.5"])
    with pytest.raises(ConfigError, match="SCALE_RANGE"):
        load_config(["AUGMENT=replace", "SCALE_RANGE=(1.2, 0.8)"])


def test_elastic_displacement_is_smooth_and_bounded_by_its_control_points():
    field = elastic_displacement((100, 150), np.random.default_rng(0), max_px=6.0, grid_px=50)
    assert field.shape == (2, 100, 150) and field.dtype == np.float32
    assert np.abs(field).max() <= 6.0 * 1.3  # cubic interpolation overshoots its control points a little
    assert np.abs(field).max() > 1.0 and np.abs(np.diff(field, axis=2)).max() < 1.0  # moves, smoothly
    assert not np.allclose(field[0], field[1])  # depth and width drawn apart


def test_elastic_augmentation_moves_image_and_masks_together():
    image = np.zeros((80, 120, 3), np.uint8)
    image[30:50, 40:80] = 200
    mask = (image[..., 0] > 0).astype(np.uint8) * 3
    sample = LoadedSlice(image, mask, (mask > 0).astype(np.uint8), 0, 0, 1, 0.0039)
    still = {"flip_prob": 0.0, "rotate_prob": 0.0, "rotate_max_degrees": 10.0, "scale_prob": 0.0,
             "scale_range": (0.8, 1.25), "scale_anisotropic": False}
    unchanged = augment_slice(sample, np.random.default_rng(0), elastic_prob=1.0, elastic_max_px=0.0, **still)
    np.testing.assert_array_equal(unchanged.image, image)
    np.testing.assert_array_equal(unchanged.mask, mask)
    out = augment_slice(sample, np.random.default_rng(1), elastic_prob=1.0, elastic_max_px=8.0, elastic_grid_px=30,
                        **still)
    assert out.image.shape == image.shape and out.image.dtype == np.uint8 and out[3:] == sample[3:]
    assert set(np.unique(out.mask)) == {0, 3} and not np.array_equal(out.mask, mask)
    bright, marked = out.image[..., 0] >= 100, out.mask > 0  # the image bilinear, the mask nearest: the same shape
    assert (bright & marked).sum() / (bright | marked).sum() > 0.9
    np.testing.assert_array_equal(out.roi > 0, marked)


def test_elastic_augmentation_needs_the_replace_augmentation():
    with pytest.raises(ConfigError, match="ELASTIC_PROB=0.5: expected 0 with AUGMENT='rmit'"):
        load_config(["ELASTIC_PROB=0.5"])
    with pytest.raises(ConfigError, match="ELASTIC_GRID_PX"):
        load_config(["AUGMENT=replace", "ELASTIC_GRID_PX=1"])
