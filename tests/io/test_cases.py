import config
import numpy as np
import pytest

from volume_factory import write_case
from utils.io.cases import Case, case_names, check_case, detect_vendor, find_cases
from utils.io.vendors import vendor_from_array, vendor_from_path
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


@pytest.mark.parametrize("name, from_vendor_file", [("oct.mhd", False), ("scan.mhd", False), ("visit.vol", True),
                                                     ("cube_z.IMG", True), ("export.xml", True)])
def test_a_case_knows_whether_its_volume_is_a_vendor_file(tmp_path, name, from_vendor_file):
    assert Case("c", "Spectralis", tmp_path / name, None).from_vendor_file is from_vendor_file


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


def test_a_case_folder_as_the_root_takes_its_vendor_from_the_folder_above(tmp_path, rng):
    write_case(tmp_path / "RETOUCH-TrainingSet-Topcon" / "TRAIN001", "Topcon", rng)
    cases, errors = find_cases(tmp_path / "RETOUCH-TrainingSet-Topcon" / "TRAIN001", config.VENDORS)
    assert not errors and [case.vendor for case in cases] == ["Topcon"]


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


def test_symlink_loops_are_followed_once(tmp_path, rng):
    """A link back up the tree used to duplicate a case; two such links made the walk endless."""
    write_case(tmp_path / "Cirrus" / "C1", "Cirrus", rng)
    write_case(tmp_path / "Topcon" / "T1", "Topcon", rng)
    (tmp_path / "Cirrus" / "C1" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "Topcon" / "back").symlink_to(tmp_path / "Cirrus", target_is_directory=True)
    (tmp_path / "Topcon" / "T1" / "self").symlink_to(tmp_path / "Topcon" / "T1", target_is_directory=True)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert errors == []
    assert [(case.name, case.vendor, case.oct_path) for case in cases] == [
        ("C1", "Cirrus", tmp_path / "Cirrus" / "C1" / "oct.mhd"),
        ("T1", "Topcon", tmp_path / "Topcon" / "T1" / "oct.mhd")]


def test_a_linked_case_keeps_its_real_path(tmp_path, rng):
    write_case(tmp_path / "Spectralis" / "S1", "Spectralis", rng)
    (tmp_path / "AAA_link").symlink_to(tmp_path / "Spectralis", target_is_directory=True)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert errors == [] and [case.oct_path for case in cases] == [tmp_path / "Spectralis" / "S1" / "oct.mhd"]


def test_colliding_case_names_stop_both_cases(tmp_path, rng):
    """Spectralis_a/b/CASE and Spectralis/a_b/CASE both join to Spectralis_a_b_CASE; a third CASE forces joining."""
    write_case(tmp_path / "Spectralis_a" / "b" / "CASE", "Spectralis", rng)
    write_case(tmp_path / "Spectralis" / "a_b" / "CASE", "Spectralis", rng)
    write_case(tmp_path / "Cirrus" / "CASE", "Cirrus", rng)
    write_case(tmp_path / "Cirrus" / "Cirrus_CASE2", "Cirrus", rng)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert sorted(case.name for case in cases) == ["Cirrus_CASE", "Cirrus_CASE2"]
    assert len(errors) == 2 and all("its case name Spectralis_a_b_CASE would also be that of" in e for e in errors)
    assert {e.split(":")[0] for e in errors} == {str(tmp_path / "Spectralis_a" / "b" / "CASE" / "oct.mhd"),
                                                 str(tmp_path / "Spectralis" / "a_b" / "CASE" / "oct.mhd")}


def test_a_joined_name_equal_to_a_folder_name_is_a_collision(tmp_path, rng):
    write_case(tmp_path / "Cirrus" / "P1", "Cirrus", rng)
    write_case(tmp_path / "Topcon" / "P1", "Topcon", rng)
    write_case(tmp_path / "Spectralis" / "Cirrus_P1", "Spectralis", rng)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert [case.name for case in cases] == ["Topcon_P1"]
    assert len(errors) == 2


def test_unreadable_folder_is_reported(tmp_path, rng, monkeypatch):
    import os

    write_case(tmp_path / "Cirrus" / "C1", "Cirrus", rng)
    write_case(tmp_path / "Topcon" / "T1", "Topcon", rng)
    real_scandir = os.scandir

    def scandir(path):
        if str(path) == str(tmp_path / "Topcon"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("utils.io.cases.os.scandir", scandir)
    cases, errors = find_cases(tmp_path, config.VENDORS)
    assert [case.name for case in cases] == ["C1"]
    assert errors == [f"{tmp_path / 'Topcon'}: cannot read this folder (Permission denied); the cases below it are "
                      f"left out: make it readable (chmod a+rx) or move it out of the data root"]


def test_folders_above_the_data_root_do_not_name_the_vendor(tmp_path, rng):
    root = tmp_path / "topcon_study" / "data"  # a study folder named after another vendor, above the root
    write_case(root / "scans" / "P1", "Spectralis", rng)  # uint16: the header says Spectralis
    (case,), errors = find_cases(root, config.VENDORS)
    assert errors == [] and case.vendor == "Spectralis"


def test_vendor_files_never_rename_oct_cases_and_take_their_suffix_on_a_clash(tmp_path):
    root = tmp_path / "data"
    paths = [root / "Cirrus" / "X" / "oct.mhd", root / "X.vol", root / "a" / "scan.vol", root / "a" / "scan.xml",
             root / "b" / "solo.img", root / "c" / "scan.vol"]
    names = case_names(paths, root)
    assert names[root / "Cirrus" / "X" / "oct.mhd"] == "X" and names[root / "X.vol"] == "X_vol"
    assert names[root / "a" / "scan.xml"] == "scan_xml" and names[root / "b" / "solo.img"] == "solo"
    # two scan.vol: neither the stem nor stem_suffix is unique, so the path joins
    assert names[root / "a" / "scan.vol"] == "a_scan_vol" and names[root / "c" / "scan.vol"] == "c_scan_vol"


def test_folder_search_passes_over_other_xml_and_resource_forks(tmp_path):
    from vendor_factory import write_heyex_xml, write_img

    root = tmp_path / "data"
    write_heyex_xml(root / "heyex", np.zeros((2, 8, 6), np.uint8), (0.01, 0.004, 0.1), name="visit")
    (root / "heyex" / "settings.xml").write_text("<settings/>\n")
    (root / "zeiss").mkdir()
    write_img(root / "zeiss" / "cube.img", np.zeros((2, 8, 6), np.uint8))
    (root / "zeiss" / "._cube.img").write_bytes(b"\0" * 96)
    cases, errors = find_cases(root, config.VENDORS)
    assert sorted((case.name, case.vendor) for case in cases) == [("cube", "Cirrus"), ("visit", "Spectralis")]
    assert errors == []


def test_a_case_of_a_vendor_that_vendors_leaves_out_is_one_line(tmp_path, rng):
    """VENDORS lists the vendors processed: a volume of another vendor, named by its folder or by its dtype and
    size, is refused naming both, as a vendor file of such a vendor is."""
    write_case(tmp_path / "Cirrus" / "C1", "Cirrus", rng)
    write_case(tmp_path / "Spectralis" / "S1", "Spectralis", rng)
    write_case(tmp_path / "unnamed" / "S2", "Spectralis", rng)  # uint16: Spectralis by its dtype
    cases, errors = find_cases(tmp_path, ("Cirrus",))
    assert [case.name for case in cases] == ["C1"]
    assert sorted(errors) == sorted([
        f"{tmp_path / 'Spectralis' / 'S1' / 'oct.mhd'}: a Spectralis volume (by its folder), but VENDORS is ('Cirrus',)",
        f"{tmp_path / 'unnamed' / 'S2' / 'oct.mhd'}: a Spectralis volume (by its dtype and size), but VENDORS is "
        f"('Cirrus',)"])
