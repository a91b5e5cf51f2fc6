"""Tests of utils.synthetic: the synthetic RETOUCH-like data set (tiny volumes, seeded, in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import config
from utils import synthetic
from utils.io.cases import check_case, find_cases
from utils.io.mhd_io import read_volume

SEED = 11
CASES_PER_VENDOR = 4
ALL_FLUIDS = tuple(config.FLUIDS)
FLUID_CODES = (config.IRF, config.SRF, config.PED)

# The real RETOUCH default volumes: (z, y, x), dtype, SimpleITK spacing (x, y, z) in mm.
RETOUCH_SPECS = {
    "Cirrus": [((128, 1024, 512), np.uint8, (0.01171875, 0.001953125, 0.046875))],
    "Spectralis": [((49, 496, 512), np.uint16, (0.0114, 0.003872, 0.1216))],
    "Topcon": [((128, 885, 512), np.uint8, (0.011719, 0.0026, 0.046875)),
               ((128, 650, 512), np.uint8, (0.011719, 0.0035, 0.046875))],
}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A small-mode tree, 4 cases per vendor: ``(root, oct paths)``."""
    root = tmp_path_factory.mktemp("synthetic") / "retouch"
    return root, synthetic.generate_dataset(root, CASES_PER_VENDOR, small=True, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def small_cases(small_tree: tuple[Path, list[Path]]) -> list[dict]:
    """Every case of ``small_tree`` read back: vendor, index within its vendor, arrays and geometry."""
    root, _ = small_tree
    cases, errors = find_cases(root, config.VENDORS)
    assert not errors
    read = []
    for number, case in enumerate(cases):
        oct_array, geometry = read_volume(case.oct_path)
        reference, reference_geometry = read_volume(case.reference_path)
        read.append({"case": case, "index": number % CASES_PER_VENDOR, "oct": oct_array,
                     "reference": reference, "geometry": geometry, "reference_geometry": reference_geometry})
    return read


def as_8bit(volume: np.ndarray) -> np.ndarray:
    """Voxel values on a 0..255 scale, Spectralis uint16 converted as the pipeline does (v / 65536 * 255)."""
    if volume.dtype == np.uint16:
        return volume.astype(np.float64) / 65536 * 255
    return volume.astype(np.float64)


def all_fluid_volume(vendor: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    spec = synthetic.case_spec(vendor, seed, small=True, n_bscans=12)
    volume, reference, _ = synthetic.generate_volume(vendor, np.random.default_rng(seed), spec, ALL_FLUIDS)
    return volume, reference


# --------------------------------------------------------------------------------------------------------------
# Sizes, types, spacing
# --------------------------------------------------------------------------------------------------------------
def test_vendor_specs_are_the_retouch_defaults():
    assert set(synthetic.VENDOR_SPECS) == set(config.VENDORS)
    for vendor, expected in RETOUCH_SPECS.items():
        specs = synthetic.VENDOR_SPECS[vendor]
        assert len(specs) == len(expected)
        for spec, (shape, dtype, spacing) in zip(specs, expected):
            assert spec.shape == shape
            assert spec.dtype == np.dtype(dtype)
            assert spec.spacing_mm == pytest.approx(spacing)
    width, depth, length = synthetic.VENDOR_SPECS["Cirrus"][0].extent_mm
    assert (width, depth, length) == pytest.approx((6.0, 2.0, 6.0))


def test_topcon_alternates_sizes_and_bscan_override_keeps_6_mm():
    assert [synthetic.case_spec("Topcon", i).shape[1] for i in range(4)] == [885, 650, 885, 650]
    spec = synthetic.case_spec("Topcon", 1, n_bscans=2)
    volume, reference, geometry = synthetic.generate_volume("Topcon", np.random.default_rng(0), spec)
    assert volume.shape == reference.shape == (2, 650, 512)
    assert volume.dtype == np.uint8 and reference.dtype == np.uint8
    assert geometry.spacing_mm == pytest.approx((0.011719, 0.0035, 3.0))  # 2 B-scans still cover 6 mm


def test_small_tree_sizes_types_and_spacing(small_cases):
    assert len(small_cases) == CASES_PER_VENDOR * len(config.VENDORS)
    for item in small_cases:
        vendor, index = item["case"].vendor, item["index"]
        full = synthetic.case_spec(vendor, index)
        expected = synthetic.case_spec(vendor, index, small=True)
        assert item["oct"].shape == item["reference"].shape == expected.shape
        assert expected.shape == (synthetic.SMALL_N_BSCANS, round(full.shape[1] * synthetic.SMALL_SCALE),
                                  round(full.shape[2] * synthetic.SMALL_SCALE))
        assert item["oct"].dtype == full.dtype
        assert item["reference"].dtype == np.uint8
        assert item["geometry"].spacing_mm == pytest.approx(expected.spacing_mm, rel=1e-5)
        assert item["reference_geometry"] == item["geometry"]
        extent = np.array(item["oct"].shape[::-1]) * np.array(item["geometry"].spacing_mm)
        assert extent == pytest.approx(full.extent_mm, rel=0.01)  # the same mm as a full-size volume


def test_retina_thickness_is_the_same_in_mm_for_every_vendor():
    """ILM (first bright row) to RPE (brightest row) of a fluid-free retina: ~0.25-0.35 mm on every vendor."""
    medians = []
    for vendor in config.VENDORS:
        spec = synthetic.case_spec(vendor, 0, n_bscans=2)
        volume, _, geometry = synthetic.generate_volume(vendor, np.random.default_rng(5), spec, ())
        dy = geometry.axial_spacing_mm
        smooth = ndimage.uniform_filter(volume.astype(np.float32), (1, max(1, round(0.01 / dy)), 5))
        background = np.median(smooth[:, :round(0.1 / dy)], axis=1, keepdims=True)
        top = np.percentile(smooth, 99.5, axis=1, keepdims=True)
        ilm = np.argmax(smooth > background + 0.3 * (top - background), axis=1)
        thickness_mm = (np.argmax(smooth, axis=1) - ilm) * dy
        medians.append(np.median(thickness_mm))
    assert min(medians) > 0.22 and max(medians) < 0.36
    assert max(medians) - min(medians) < 0.02


# --------------------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------------------
def test_same_seed_same_volume_other_seed_other_volume():
    spec = synthetic.case_spec("Cirrus", 0, small=True)
    first = synthetic.generate_volume("Cirrus", np.random.default_rng(3), spec, ALL_FLUIDS)
    again = synthetic.generate_volume("Cirrus", np.random.default_rng(3), spec, ALL_FLUIDS)
    other = synthetic.generate_volume("Cirrus", np.random.default_rng(4), spec, ALL_FLUIDS)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_same_seed_same_bytes_on_disk(tmp_path, small_tree):
    root, paths = small_tree
    again = synthetic.generate_dataset(tmp_path / "again", CASES_PER_VENDOR, small=True, seed=SEED, progress=False)
    other = synthetic.generate_dataset(tmp_path / "other", 1, small=True, seed=SEED + 1, progress=False)
    for path, path_again in zip(paths, again):
        for name in ("oct.raw", "reference.raw", "oct.mhd"):
            assert (path.parent / name).read_bytes() == (path_again.parent / name).read_bytes()
    assert (paths[0].parent / "oct.raw").read_bytes() != (other[0].parent / "oct.raw").read_bytes()


def test_written_case_is_the_generated_volume(small_cases):
    """Case i of vendor v is generate_volume with the generator seeded (seed, vendor index, i)."""
    item = small_cases[CASES_PER_VENDOR + 1]  # second Spectralis case
    vendor, index = item["case"].vendor, item["index"]
    rng = np.random.default_rng([SEED, config.VENDORS.index(vendor), index])
    volume, reference, _ = synthetic.generate_volume(vendor, rng, synthetic.case_spec(vendor, index, small=True),
                                                     synthetic.fluids_for_case(index))
    np.testing.assert_array_equal(item["oct"], volume)
    np.testing.assert_array_equal(item["reference"], reference)


# --------------------------------------------------------------------------------------------------------------
# Labels and anatomy
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vendor", config.VENDORS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fluids_lie_in_anatomical_order(vendor, seed):
    """Per A-scan: IRF above SRF above PED, SRF and PED one contiguous run each, nothing in the vitreous top."""
    _, reference = all_fluid_volume(vendor, seed)
    assert set(np.unique(reference)) == {config.BACKGROUND, *FLUID_CODES}
    height = reference.shape[1]
    rows = np.arange(height)[None, :, None]

    def first_last(code):
        mask = reference == code
        return np.where(mask, rows, height).min(axis=1), np.where(mask, rows, -1).max(axis=1), mask.sum(axis=1)

    irf_first, irf_last, _ = first_last(config.IRF)
    srf_first, srf_last, srf_count = first_last(config.SRF)
    ped_first, ped_last, ped_count = first_last(config.PED)
    assert (irf_last < srf_first).all() and (irf_last < ped_first).all() and (srf_last < ped_first).all()
    for first, last, count in ((srf_first, srf_last, srf_count), (ped_first, ped_last, ped_count)):
        present = count > 0
        assert (last - first + 1)[present] == pytest.approx(count[present])
    assert not reference[:, :round(0.12 * height)].any()


@pytest.mark.parametrize("vendor", config.VENDORS)
@pytest.mark.parametrize("seed", [0, 1])
def test_fluid_is_darker_than_the_tissue_around_it(vendor, seed):
    """Labels cover exactly the dark voxels: even their border voxels are far darker than the voxels around."""
    volume, reference = all_fluid_volume(vendor, seed)
    values = as_8bit(volume)
    in_plane = np.ones((1, 3, 3), bool)
    for code in FLUID_CODES:
        mask = reference == code
        border = mask & ~ndimage.binary_erosion(mask, in_plane)
        ring = ndimage.binary_dilation(mask, in_plane, iterations=2) & (reference == config.BACKGROUND)
        assert values[mask].mean() < 0.8 * values[ring].mean()
        assert values[border].mean() < 0.8 * values[ring].mean()


def test_fluid_plan_volumes_and_bscans_without_fluid(small_cases):
    for vendor in config.VENDORS:
        items = [item for item in small_cases if item["case"].vendor == vendor]
        present = [set(np.unique(item["reference"])) - {config.BACKGROUND} for item in items]
        for item, codes in zip(items, present):
            assert codes == {config.FLUIDS[name] for name in synthetic.fluids_for_case(item["index"])}
        assert set().union(*present) == set(FLUID_CODES)  # every fluid type in some case of each vendor
        assert any(not codes for codes in present)  # a case without any fluid
        for item, codes in zip(items, present):
            if codes:  # fluid is local: some B-scans of a fluid case hold none
                assert not item["reference"].any(axis=(1, 2)).all()


def test_every_requested_fluid_is_drawn_even_with_few_bscans():
    """Lesions are centred on a B-scan, so 4 B-scans 1.5 mm apart still show each requested fluid."""
    spec = synthetic.case_spec("Spectralis", 0, small=True, n_bscans=4)
    for seed in range(20):
        _, reference, _ = synthetic.generate_volume("Spectralis", np.random.default_rng(seed), spec, ALL_FLUIDS)
        assert set(np.unique(reference)) == {config.BACKGROUND, *FLUID_CODES}


def test_fluid_spans_adjacent_bscans_at_full_bscan_spacing():
    spec = synthetic.case_spec("Spectralis", 0)  # the coarsest real B-scan spacing, 0.12 mm
    _, reference, _ = synthetic.generate_volume("Spectralis", np.random.default_rng(2), spec, ALL_FLUIDS)
    for code in FLUID_CODES:
        blobs = ndimage.find_objects(ndimage.label(reference == code)[0])
        assert max(blob[0].stop - blob[0].start for blob in blobs) >= 3  # a 3-D blob, not one B-scan's


# --------------------------------------------------------------------------------------------------------------
# Vendor intensity distributions
# --------------------------------------------------------------------------------------------------------------
def test_vendor_intensity_distributions_differ(small_cases):
    pooled = {vendor: np.concatenate([as_8bit(item["oct"]).ravel() for item in small_cases
                                      if item["case"].vendor == vendor]) for vendor in config.VENDORS}
    p5, p50, p95 = ({vendor: np.percentile(values, q) for vendor, values in pooled.items()} for q in (5, 50, 95))
    cirrus, spectralis, topcon = "Cirrus", "Spectralis", "Topcon"
    assert p5[cirrus] > p5[topcon] + 25 and p5[cirrus] > p5[spectralis] + 25  # Cirrus: bright noisy background
    assert p50[cirrus] > p50[topcon] + 40
    assert p95[topcon] < 0.6 * p95[cirrus] and p95[topcon] < 0.6 * p95[spectralis]  # Topcon: dark, low contrast
    spectralis_raw = np.concatenate([item["oct"].ravel() for item in small_cases
                                     if item["case"].vendor == spectralis])
    assert spectralis_raw.max() == 65535 and np.percentile(spectralis_raw, 5) < 600  # the whole uint16 range
    assert p95[spectralis] - p5[spectralis] > 2 * (p95[topcon] - p5[topcon])  # high dynamic range


# --------------------------------------------------------------------------------------------------------------
# The written tree
# --------------------------------------------------------------------------------------------------------------
def test_tree_is_found_with_vendors_and_references(small_tree):
    root, paths = small_tree
    cases, errors = find_cases(root, config.VENDORS)
    assert errors == []
    assert [case.oct_path for case in cases] == sorted(paths)
    numbers = sorted(int(case.name.removeprefix("TRAIN")) for case in cases)
    assert numbers == list(range(1, CASES_PER_VENDOR * len(config.VENDORS) + 1))
    for case in cases:
        vendor_index = (int(case.name.removeprefix("TRAIN")) - 1) // CASES_PER_VENDOR
        assert case.vendor == config.VENDORS[vendor_index]  # Cirrus first, then Spectralis, then Topcon
        assert case.oct_path.parent.parent.name == f"RETOUCH-TrainingSet-{case.vendor}"
        assert case.has_reference
        check_case(case)


def test_rerun_writes_only_missing_cases(tmp_path):
    root = tmp_path / "set"
    paths = synthetic.generate_dataset(root, 1, small=True, seed=2, progress=False)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    contents = {p: p.read_bytes() for p in files}
    assert synthetic.generate_dataset(root, 1, small=True, seed=2, progress=False) == paths
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    lost = paths[1].parent / "reference.mhd"  # an interrupted case: its oct written, its reference not
    lost.unlink()
    synthetic.generate_dataset(root, 1, small=True, seed=2, progress=False)
    assert lost.read_bytes() == contents[lost]
    for p in files:
        if p.parent != paths[1].parent:
            assert p.stat().st_mtime_ns == mtimes[p]
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files  # no temporary files left


def test_never_writes_into_other_data(tmp_path):
    foreign = tmp_path / "data" / "Cirrus" / "P01" / "oct.mhd"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("not ours")
    with pytest.raises(FileExistsError, match="did not write"):
        synthetic.generate_dataset(tmp_path / "data", 1, small=True, progress=False)
    assert foreign.read_text() == "not ours"
    assert not (tmp_path / "data" / synthetic.MARKER_FILE).exists()

    synthetic.generate_dataset(tmp_path / "ours", 1, small=True, seed=0, progress=False)
    with pytest.raises(FileExistsError, match="other|not"):
        synthetic.generate_dataset(tmp_path / "ours", 1, small=True, seed=1, progress=False)


def test_bad_inputs_are_rejected_with_a_hint():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="did you mean Cirrus"):
        synthetic.generate_volume("Cirus", rng)
    with pytest.raises(ValueError, match="unknown fluid"):
        synthetic.generate_volume("Cirrus", rng, fluids=("CNV",))
    with pytest.raises(ValueError, match="cases_per_vendor"):
        synthetic.generate_dataset("unused", 0)
    with pytest.raises(ValueError, match="n_bscans"):
        synthetic.VENDOR_SPECS["Cirrus"][0].resized(n_bscans=0)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    synthetic.main(["--out", str(out), "--small", "--cases-per-vendor", "1", "--bscans", "3", "--seed", "5"])
    assert "3 cases" in capsys.readouterr().out
    cases, errors = find_cases(out, config.VENDORS)
    assert len(cases) == 3 and not errors
    assert read_volume(cases[0].oct_path)[0].shape[0] == 3
    with pytest.raises(SystemExit):  # other settings into the same folder: refused
        synthetic.main(["--out", str(out), "--small", "--cases-per-vendor", "1", "--seed", "6"])


def test_too_many_bscans_is_a_one_line_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        synthetic.main(["--out", str(tmp_path / "s"), "--bscans", "100000"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"--bscans 100000: expected 1 to {synthetic.MAX_BSCANS} B-scans per volume (devices "
                            f"scan up to a few hundred)")
    assert not (tmp_path / "s").exists()


def test_the_generator_is_recorded_by_module_not_by_how_it_was_started(tmp_path):
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "s"
    subprocess.run([sys.executable, "-m", "utils.synthetic", "--out", str(out), "--small", "--cases-per-vendor", "1"],
                   cwd=repo, check=True, capture_output=True, timeout=300)
    assert json.loads((out / synthetic.MARKER_FILE).read_text())["generator"] == "utils.synthetic"
    synthetic.generate_dataset(out, 1, small=True)  # as demo.py calls it: accepted, nothing regenerated
