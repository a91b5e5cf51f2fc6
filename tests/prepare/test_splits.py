import pandas as pd
import pytest

import config
from utils.io.tables import SPLITS
from utils.prepare.splits import SplitSettings, write_split, make_split, split_counts


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
    split, errors = write_split(_index(4, unlabelled={"Cir00", "Top03"}), tmp_path, SplitSettings())
    assert errors == []
    assert set(split.loc[split["case"].isin(["Cir00", "Top03"]), "split"]) == {"test"}


def test_slice_lists_follow_the_split(tmp_path):
    index = _index(5)
    split, _ = write_split(index, tmp_path, SplitSettings())
    seen = []
    for name in SPLITS:
        rows = pd.read_csv(tmp_path / f"slices_{name}.csv")
        assert set(rows["case"]) == set(split.loc[split["split"] == name, "case"])
        assert len(rows) == 3 * len(set(rows["case"]))  # every B-scan of a case goes with it
        seen += list(set(rows["case"]))
    assert sorted(seen) == sorted(index["case"].unique())  # no case in two splits, none lost


def test_existing_split_file_is_used_as_it_is(tmp_path):
    index = _index(4)
    split, _ = write_split(index, tmp_path, SplitSettings())
    edited = split.copy()
    edited["split"] = "train"
    edited.loc[edited["case"] == "Spe01", "split"] = "val"
    edited.to_csv(tmp_path / "split.csv", index=False)
    again, errors = write_split(index, tmp_path, SplitSettings())
    assert errors == []
    assert list(again.loc[again["split"] == "val", "case"]) == ["Spe01"]
    assert pd.read_csv(tmp_path / "split.csv")["split"].tolist() == edited["split"].tolist()  # not regenerated


def test_split_file_with_unknown_cases_and_splits(tmp_path):
    index = _index(2)
    given = tmp_path / "mine.csv"
    pd.DataFrame({"case": ["Cir00", "Cir01", "Nobody", "Top00"],
                  "split": ["train", "Test", "val", "holdout"]}).to_csv(given, index=False)
    split, errors = write_split(index, tmp_path, SplitSettings(), split_file=given)
    assert any("mine.csv: names case(s) that are not among the prepared cases: Nobody" in e for e in errors)
    assert any("mine.csv: split must be one of" in e and "holdout" in e for e in errors)
    assert dict(zip(split["case"], split["split"])) == {"Cir00": "train", "Cir01": "test"}
    assert not (tmp_path / "split.csv").exists()


def test_split_file_without_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("name,fold\nA,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: split file lacks the column\(s\) \['case', 'split'\]"):
        write_split(_index(1), tmp_path, SplitSettings(), split_file=tmp_path / "bad.csv")


def _cases(index):
    return sorted(index["case"].unique())


def test_automatic_split_takes_in_cases_prepared_later(tmp_path):
    """A case that failed in the first run (missing .raw, disk full) and is fixed later must not stay out."""
    full = _index(6)
    late = {"Cir02", "Spe05", "Top00", "Top01"}
    first, errors = write_split(full[~full["case"].isin(late)], tmp_path, SplitSettings())
    assert errors == [] and set(first["case"]) == set(full["case"]) - late
    again, errors = write_split(full, tmp_path, SplitSettings())
    assert errors == []
    assert sorted(again["case"]) == _cases(full)  # every prepared case is in a split
    kept = again.set_index("case")["split"]
    assert all(kept[case] == name for case, name in zip(first["case"], first["split"]))  # none moved
    on_disk = pd.read_csv(tmp_path / "split.csv")
    assert sorted(on_disk["case"]) == _cases(full)
    listed = sum(len(pd.read_csv(tmp_path / f"slices_{name}.csv")) for name in SPLITS)
    assert listed == len(full)
    # still shares of train/val/test per vendor after the extension (4 or 5 + 1 + 1 of 6)
    counts = again.groupby(["vendor", "split"]).size().unstack(fill_value=0)
    assert (counts["val"] >= 1).all() and (counts["test"] >= 1).all() and (counts["train"] >= 3).all()


def test_an_edited_split_is_a_users_split(tmp_path):
    full = _index(3)
    write_split(full[full["case"] != "Cir01"], tmp_path, SplitSettings())
    edited = pd.read_csv(tmp_path / "split.csv")
    edited.loc[0, "split"] = "val"
    edited.to_csv(tmp_path / "split.csv", index=False)
    split, errors = write_split(full, tmp_path, SplitSettings())
    assert "Cir01" not in set(split["case"])
    assert len(errors) == 1 and "split.csv: does not list 1 prepared case(s): Cir01; add them" in errors[0]
    assert "--allow-unlisted" in errors[0]
    split, errors = write_split(full, tmp_path, SplitSettings(split_allow_unlisted=True))
    assert errors == [] and "Cir01" not in set(split["case"])


def test_unlisted_case_in_a_given_split_file_is_an_error(tmp_path):
    given = tmp_path / "mine.csv"
    pd.DataFrame({"case": ["Cir00", "Spe00"], "split": ["train", "test"]}).to_csv(given, index=False)
    _, errors = write_split(_index(1), tmp_path, SplitSettings(), split_file=given)
    assert errors == [f"{given}: does not list 1 prepared case(s): Top00; add them to a split, or leave them out on "
                      f"purpose with --allow-unlisted (SPLIT_ALLOW_UNLISTED)"]


@pytest.mark.parametrize("rows, message", [
    ([("Cir00", "train"), ("Cir00", "test"), ("Spe00", "train")], "Cir00 (train, test)"),
    ([("Cir00", "train"), ("Cir00", "train"), ("Spe00", "train")], "Cir00 (train, train)"),
])
def test_a_case_listed_twice_is_refused(tmp_path, rows, message):
    given = tmp_path / "mine.csv"
    pd.DataFrame(rows + [("Top00", "val")], columns=["case", "split"]).to_csv(given, index=False)
    split, errors = write_split(_index(1), tmp_path, SplitSettings(), split_file=given)
    assert any(e.startswith(f"{given}: case(s) listed more than once: {message}; a case belongs to exactly one")
               for e in errors)
    assert "Cir00" not in set(split["case"])  # in no split: never in train and test at once
    for name in SPLITS:
        assert "Cir00" not in set(pd.read_csv(tmp_path / f"slices_{name}.csv")["case"])


def test_blank_cells_and_text_names(tmp_path):
    index = _index(1)
    index.loc[index["case"] == "Cir00", "case"] = "NA"
    given = tmp_path / "mine.csv"
    given.write_text("case,split\nNA,train\n,val\nSpe00,\nTop00,test\n")
    split, errors = write_split(index, tmp_path, SplitSettings(), split_file=given)
    assert dict(zip(split["case"], split["split"])) == {"NA": "train", "Top00": "test"}
    assert any("line(s) 3 have a blank case cell" in e for e in errors)
    assert any("rows of case(s) Spe00 say (blank)" in e for e in errors)


def test_the_original_split_draws_among_all_cases():
    """SPLIT_BY_VENDOR=False, 75/25/0: the original's SplitRandom(ratio=0.75) by case, vendors ignored."""
    index = _index(cases_per_vendor=4)
    cases = index.groupby("case").agg(vendor=("vendor", "first"), root=("root", "first"),
                                      n_slices=("slice", "size"), has_reference=("has_reference", "first"))
    cases = cases.reset_index()
    fractions = {"train": 0.75, "val": 0.25, "test": 0.0}
    splits = [make_split(cases, fractions, seed=seed, by_vendor=False) for seed in range(20)]
    for split in splits:
        assert split["split"].value_counts().to_dict() == {"train": 9, "val": 3}
    # drawn among all cases: some seed puts two validation cases of one vendor together (never so by vendor)
    assert any(split[split["split"] == "val"]["vendor"].value_counts().max() > 1 for split in splits)
    by_vendor = make_split(cases, fractions, seed=0)
    assert (by_vendor[by_vendor["split"] == "val"]["vendor"].value_counts() == 1).all()
