"""utils/predict/inputs.py: the cases a predict.py command line names."""

import numpy as np

import config
from utils.predict.inputs import collect_cases
from volume_factory import write_case


def test_folders_files_and_unusable_inputs(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    write_case(root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001", "Cirrus", rng)
    write_case(root / "RETOUCH-TrainingSet-Topcon" / "TRAIN002", "Topcon", rng)
    write_case(tmp_path / "elsewhere" / "TRAIN001", "Spectralis", rng)  # same case name, another volume
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    one = root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001" / "oct.mhd"
    inputs = [root, one, tmp_path / "elsewhere" / "TRAIN001" / "oct.mhd", tmp_path / "empty",
              tmp_path / "notes.txt", tmp_path / "missing"]
    cases, errors = collect_cases(inputs, config.VENDORS)
    assert [(case.name, case.vendor) for case in cases] == [("TRAIN001", "Cirrus"), ("TRAIN002", "Topcon")]
    assert len(errors) == 4
    assert "case name TRAIN001 is taken by" in errors[3]  # the file named twice counts once, the other clashes
    assert errors[0] == f"{tmp_path / 'empty'}: no oct.mhd nor vendor file below this folder"
    assert errors[1].startswith(f"{tmp_path / 'notes.txt'}: not a MetaImage header (.mhd) nor a vendor file")
    assert errors[2] == f"{tmp_path / 'missing'}: no such file or folder"


def test_a_reference_volume_is_refused_as_an_input(tmp_path):
    write_case(tmp_path / "Spectralis" / "TRAIN001", "Spectralis", np.random.default_rng(0))
    reference = tmp_path / "Spectralis" / "TRAIN001" / "reference.mhd"
    cases, errors = collect_cases([reference], config.VENDORS)
    assert cases == [] and errors == [f"{reference}: a case's reference labels, not a scan; give the oct.mhd beside it"]
