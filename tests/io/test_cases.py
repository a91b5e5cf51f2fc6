import config
import numpy as np
import pytest

from volume_factory import write_case
from utils.io.cases import Case, check_case, detect_vendor, find_cases, vendor_from_array, vendor_from_path
from utils.io.mhd_io import Geometry, VolumeError, write_volume


@pytest.mark.parametrize("relative", [
    "RETOUCH-TrainingSet-Cirrus/TRAIN001",
    "download/RETOUCH-TrainingSet-Cirrus/TRAIN001",
    "Cirrus/TRAIN001",
    "cirrus/patient_A",
    "RETOUCH-TestSet-CIRRUS/TEST001",
])
def test_layouts_are_found(tmp_path, rng, relative):
    write_case(tmp_path / relative, "Cirrus", rng)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert errors == []
    assert [(case.name, case.vendor) for case in cases] == [(relative.split("/")[-1], "Cirrus")]
    assert cases[0].has_reference


def test_test_case_without_reference(tmp_path, rng):
    write_case(tmp_path / "Topcon" / "TEST001", "Topcon", rng, with_reference=False)
    (case,), _ = find_cases(tmp_path, config.VENDORS)
    assert case.reference_path is None and not case.has_reference


def test_duplicate_folder_names_get_their_path(tmp_path, rng):
    write_case(tmp_path / "Cirrus" / "P1", "Cirrus", rng)
    write_case(tmp_path / "Spectralis" / "P1", "Spectralis", rng)
    cases, _ = find_cases(tmp_path, config.VENDORS)
    assert sorted(case.name for case in cases) == ["Cirrus_P1", "Spectralis_P1"]


def test_vendor_from_path_prefers_the_nearest_folder():
    assert vendor_from_path("/data/Topcon-export/Cirrus/TRAIN001", config.VENDORS) == "Cirrus"
    assert vendor_from_path("/data/scans/TRAIN001", config.VENDORS) is None


@pytest.mark.parametrize("dtype, shape, vendor", [
    (np.uint16, (49, 496, 512), "Spectralis"),
    (np.uint8, (128, 1024, 512), "Cirrus"),
    (np.uint8, (128, 885, 512), "Topcon"),
    (np.uint8, (128, 650, 512), "Topcon"),
    (np.uint8, (128, 700, 512), None),
    (np.float32, (10, 10, 10), None),
])
def test_vendor_from_array(dtype, shape, vendor):
    assert vendor_from_array(np.dtype(dtype), shape) == vendor


def test_vendor_from_header_when_the_path_names_none(tmp_path):
    write_volume(tmp_path / "scans" / "A" / "oct.mhd", np.zeros((2, 1024, 4), np.uint8), Geometry((1, 1, 1)))
    assert detect_vendor(tmp_path / "scans" / "A" / "oct.mhd", config.VENDORS, tmp_path) == "Cirrus"


def test_unknown_vendor_is_reported_and_others_kept(tmp_path, rng):
    write_volume(tmp_path / "scans" / "A" / "oct.mhd", np.zeros((2, 30, 4), np.uint8), Geometry((1, 1, 1)))
    write_case(tmp_path / "Cirrus" / "B", "Cirrus", rng)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert [case.name for case in cases] == ["B"]
    assert len(errors) == 1 and "scans/A/oct.mhd: unknown vendor" in errors[0]


def test_size_mismatch_names_the_reference(tmp_path, rng):
    folder = tmp_path / "Cirrus" / "A"
    write_case(folder, "Cirrus", rng)
    write_volume(folder / "reference.mhd", np.zeros((5, 10, 10), np.uint8), Geometry((1, 1, 1)))
    with pytest.raises(VolumeError, match=r"A/reference\.mhd: size .* differs from its oct\.mhd"):
        check_case(Case("A", "Cirrus", folder / "oct.mhd", folder / "reference.mhd"))


def test_data_root_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root is not a folder"):
        find_cases(tmp_path / "nowhere", config.VENDORS)
