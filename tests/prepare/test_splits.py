import types

import pandas as pd
import pytest

import config
from utils.io.tables import SPLITS
from utils.prepare.splits import create_test_train_set, make_split, split_counts


def _cfg():
    return types.SimpleNamespace(**{name: getattr(config, name) for name in dir(config) if name.isupper()})


def _index(cases_per_vendor=6, unlabelled=()):
    rows = []
    for vendor in config.VENDORS:
        for number in range(cases_per_vendor):
            case = f"{vendor[:3]}{number:02d}"
            for z in range(3):
                rows.append({"case": case, "vendor": vendor, "root": f"slices/{case}", "slice": z,
                             "image_name": f"{case}_{z:03d}.png", "has_reference": case not in unlabelled})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n, expected", [
    (0, {"train": 0, "val": 0, "test": 0}),
    (1, {"train": 1, "val": 0, "test": 0}),
    (2, {"train": 2, "val": 0, "test": 0}),
    (4, {"train": 2, "val": 1, "test": 1}),
    (24, {"train": 16, "val": 4, "test": 4}),
])
def test_split_counts(n, expected):
    assert split_counts(n, {"train": 0.7, "val": 0.15, "test": 0.15}) == expected


def test_split_is_by_case_stratified_and_seeded():
    index = _index(cases_per_vendor=8)
    cases = index.groupby("case").agg(vendor=("vendor", "first"), root=("root", "first"),
                                      n_slices=("slice", "size"), has_reference=("has_reference", "first"))
    cases = cases.reset_index()
    first = make_split(cases, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    again = make_split(cases, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    other = make_split(cases, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])
    counts = first.groupby(["vendor", "split"]).size().unstack()
    assert (counts["train"] == 4).all() and (counts["val"] == 2).all() and (counts["test"] == 2).all()
    assert first["case"].is_unique


def test_unlabelled_cases_go_to_test(tmp_path):
    split, errors = create_test_train_set(_index(4, unlabelled={"Cir00", "Top03"}), tmp_path, _cfg())
    assert errors == []
    assert set(split.loc[split["case"].isin(["Cir00", "Top03"]), "split"]) == {"test"}


def test_slice_lists_follow_the_split(tmp_path):
    index = _index(5)
    split, _ = create_test_train_set(index, tmp_path, _cfg())
    seen = []
    for name in SPLITS:
        rows = pd.read_csv(tmp_path / f"slices_{name}.csv")
        assert set(rows["case"]) == set(split.loc[split["split"] == name, "case"])
        assert len(rows) == 3 * len(set(rows["case"]))  # every B-scan of a case goes with it
        seen += list(set(rows["case"]))
    assert sorted(seen) == sorted(index["case"].unique())  # no case in two splits, none lost


def test_existing_split_file_is_used_as_it_is(tmp_path):
    index = _index(4)
    split, _ = create_test_train_set(index, tmp_path, _cfg())
    edited = split.copy()
    edited["split"] = "train"
    edited.loc[edited["case"] == "Spe01", "split"] = "val"
    edited.to_csv(tmp_path / "split.csv", index=False)
    again, errors = create_test_train_set(index, tmp_path, _cfg())
    assert errors == []
    assert list(again.loc[again["split"] == "val", "case"]) == ["Spe01"]
    assert pd.read_csv(tmp_path / "split.csv")["split"].tolist() == edited["split"].tolist()  # not regenerated


def test_split_file_with_unknown_cases_and_splits(tmp_path):
    index = _index(2)
    given = tmp_path / "mine.csv"
    pd.DataFrame({"case": ["Cir00", "Cir01", "Nobody", "Top00"],
                  "split": ["train", "Test", "val", "holdout"]}).to_csv(given, index=False)
    split, errors = create_test_train_set(index, tmp_path, _cfg(), split_file=given)
    assert any("mine.csv: names case(s) that are not among the prepared cases: Nobody" in e for e in errors)
    assert any("mine.csv: split must be one of" in e and "holdout" in e for e in errors)
    assert dict(zip(split["case"], split["split"])) == {"Cir00": "train", "Cir01": "test"}
    assert not (tmp_path / "split.csv").exists()


def test_split_file_without_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("name,fold\nA,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: split file lacks the column\(s\) \['case', 'split'\]"):
        create_test_train_set(_index(1), tmp_path, _cfg(), split_file=tmp_path / "bad.csv")
