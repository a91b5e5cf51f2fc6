import re

import pytest

import config
from utils.predict import label_tables
from utils.predict.overlays import FLUID_COLOURS

FLUIDS = {"IRF": 1, "SRF": 2, "PED": 3}


def test_itksnap_file_names_and_colours_every_label():
    text = label_tables.itksnap_label_description(FLUIDS, 0)
    rows = [line.split(maxsplit=7) for line in text.splitlines() if not line.startswith("#")]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]
    assert rows[0][1:] == ["0", "0", "0", "0.00", "0", "0", '"Background"']  # clear, hidden
    for row, (fluid, code) in zip(rows[1:], FLUIDS.items()):
        assert tuple(int(v) for v in row[1:4]) == FLUID_COLOURS[fluid]
        assert row[4:7] == ["1.00", "1", "1"] and row[7] == f'"{fluid}"'


def test_slicer_table_names_and_colours_every_label():
    text = label_tables.slicer_colour_table(FLUIDS, 0)
    assert "# 4 values" in text
    rows = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rows[0] == ["0", "Background", "0", "0", "0", "0"]
    assert rows[1:] == [[str(code), fluid, *map(str, FLUID_COLOURS[fluid]), "255"] for fluid, code in FLUIDS.items()]
    assert all(re.fullmatch(r"\S+", row[1]) for row in rows)  # Slicer names hold no spaces


def test_a_fluid_without_colour_is_refused():
    with pytest.raises(ValueError, match="no colour for fluid\\(s\\) DRUSEN; add them to FLUID_COLOURS"):
        label_tables.slicer_colour_table({**FLUIDS, "DRUSEN": 4}, 0)


def test_write_label_tables(tmp_path):
    paths = label_tables.write_label_tables(tmp_path, config.FLUIDS, config.BACKGROUND, config.ITKSNAP_LABELS_FILE,
                                            config.SLICER_COLOURS_FILE)
    assert [p.name for p in paths] == [config.ITKSNAP_LABELS_FILE, config.SLICER_COLOURS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
