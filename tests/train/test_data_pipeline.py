import numpy as np
import pytest
import torch

from utils.configuration import load_config
from utils.train.data_pipeline import (augment_slice, choose_validation_records, load_slice, read_split_slices,
                                 slice_records, training_batches, validation_batches)
from utils.io.files import read_png

SMALL = ["PATCH_SHAPE=(128, 64)", "PATCH_BORDER=8", "BATCH_SIZE=6", "VAL_BSCANS=8"]


@pytest.fixture
def cfg():
    return load_config(SMALL)


@pytest.fixture
def train_records(prepared_work, cfg):
    return slice_records(read_split_slices(prepared_work, "train", cfg), cfg.FLUIDS)


def test_load_slice_stacks_neighbours_and_repeats_edges(prepared_work, cfg, train_records):
    first = next(record for record in train_records if record[2] == 0)
    case, root, _, n_slices, _, spacing = first
    image, mask, roi, *flags, spacing_read = load_slice(first, prepared_work, cfg)
    bscan = lambda z: read_png(prepared_work / root / "oct" / f"{case}_{z:03d}.png")
    assert image.shape == mask.shape + (3,) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], bscan(0))  # edge: B-scan 0 repeated
    np.testing.assert_array_equal(image[..., 1], bscan(0))
    np.testing.assert_array_equal(image[..., 2], bscan(1))
    assert set(np.unique(roi)) <= {0, 1} and spacing_read == spacing
    assert flags == [int((mask == code).any()) for code in (1, 2, 3)]
    last = load_slice((case, root, n_slices - 1, n_slices, 0, spacing), prepared_work, cfg)[0]
    np.testing.assert_array_equal(last[..., 2], bscan(n_slices - 1))


def test_training_batches_shape_dtype_range_and_seed(prepared_work, cfg, train_records):
    first = next(training_batches(train_records, prepared_work, cfg, seed=5))
    again = next(training_batches(train_records, prepared_work, cfg, seed=5))
    other = next(training_batches(train_records, prepared_work, cfg, seed=6))
    images, masks = first
    assert images.shape == (6, 3, 128, 64) and images.dtype == torch.float32
    assert masks.shape == (6, 128, 64) and masks.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() < 1.0
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3}
    assert torch.equal(images, again[0]) and torch.equal(masks, again[1])
    assert not torch.equal(images, other[0])


def test_patches_without_fluid_are_dropped(prepared_work, train_records):
    cfg = load_config(SMALL + ["EMPTY_PATCH_DROP_PROB=1.0"])
    batches = training_batches(train_records, prepared_work, cfg, seed=1)
    for _ in range(3):
        _, masks = next(batches)
        inner = masks[:, 8:-8, 8:-8]
        assert all(bool((mask > 0).any()) for mask in inner)


def test_augmentation_flips_image_and_masks_together(cfg):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:8, 2:6] = 2
    roi = (mask > 0).astype(np.uint8)
    sample = (image, mask, roi, 0, 1, 0, 0.0039)
    flip = load_config(["FLIP_PROB=1.0", "ROTATE_PROB=0.0"])
    out = augment_slice(sample, rng, flip)
    np.testing.assert_array_equal(out[0], image[:, ::-1])
    np.testing.assert_array_equal(out[1], mask[:, ::-1])
    rotate = load_config(["FLIP_PROB=0.0", "ROTATE_PROB=1.0", "ROTATE_MAX_DEGREES=10.0"])
    rotated = augment_slice(sample, rng, rotate)
    assert set(np.unique(rotated[1])) <= {0, 2} and rotated[0].dtype == np.uint8
    assert rotated[3:] == sample[3:]


def _records(n_with_fluid: int, n_without: int) -> list[tuple]:
    return [("c", "slices/c", z, 40, int(z < n_with_fluid), 0.0039) for z in range(n_with_fluid + n_without)]


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
    assert sum(record[4] for record in chosen) == expected_with_fluid
    assert chosen == choose_validation_records(records, 8, seed=0)
    assert chosen != choose_validation_records(_records(n_with_fluid, n_without), 8, seed=1)


def test_validation_batches_are_fixed(prepared_work, cfg):
    records = slice_records(read_split_slices(prepared_work, "val", cfg), cfg.FLUIDS)
    first = validation_batches(records, prepared_work, cfg, seed=0)
    second = validation_batches(records, prepared_work, cfg, seed=0)
    assert len(first) == len(second) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_ranks_and_workers_draw_different_patches(prepared_work, cfg, train_records):
    from utils.train.data_pipeline import PatchBatches

    rank0 = next(iter(PatchBatches(train_records, prepared_work, cfg, seed=0, rank=0)))
    rank1 = next(iter(PatchBatches(train_records, prepared_work, cfg, seed=0, rank=1)))
    again = next(iter(PatchBatches(train_records, prepared_work, cfg, seed=0, rank=0)))
    resumed = next(iter(PatchBatches(train_records, prepared_work, cfg, seed=0, rank=0, start_epoch=3)))
    assert torch.equal(rank0[0], again[0])
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[0], resumed[0])


def test_loader_workers_auto_choice():
    from utils.train.data_pipeline import loader_workers

    assert loader_workers(load_config(["LOADER_WORKERS=-1"]), "cpu") == 0
    assert 1 <= loader_workers(load_config(["LOADER_WORKERS=-1"]), "cuda") <= 8
    assert loader_workers(load_config(["LOADER_WORKERS=-1"]), "cuda", processes_per_node=64) == 1
    assert loader_workers(load_config(["LOADER_WORKERS=3"]), "cpu") == 3
