"""A data root that cannot be written (a read-only mount) is prepared, predicted and evaluated normally.

A read-only mount is simulated in-process: every Python call that would create, change, rename or delete a file
under the data root raises ``EROFS``, as the kernel would (the files are also made read-only, which holds for a
user other than root). The scripts must never try.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import stat
from pathlib import Path

import pytest
import torch

import evaluate
import predict
import prepare_data
from utils.configuration import config_to_dict, load_config
from utils.io.vendor_files import VendorFileSettings
from utils.model.checkpoints import save_checkpoint
from utils.model.networks import build_unet
from utils.prepare.preprocessing import histogram_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": 4}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@contextlib.contextmanager
def read_only(root: Path):
    """Within the block, writes under ``root`` fail with EROFS; yields the list of the paths attempted."""
    root = root.resolve()
    attempts: list[str] = []

    def inside(path) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def refuse(path):
        attempts.append(str(path))
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_open, real_os_open = builtins.open, os.open
    guarded = {name: getattr(os, name) for name in ("mkdir", "rename", "replace", "unlink", "remove", "rmdir",
                                                    "chmod", "utime")}

    def open_guard(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open_guard(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS and inside(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guard(name):
        def call(path, *args, **kwargs):
            if inside(path) or (args and isinstance(args[0], (str, os.PathLike)) and inside(args[0])):
                refuse(path)
            return guarded[name](path, *args, **kwargs)
        return call

    patches = {(builtins, "open"): open_guard, (io, "open"): open_guard, (os, "open"): os_open_guard,
               **{(os, name): guard(name) for name in guarded}}
    saved = {key: getattr(*key) for key in patches}
    for (module, name), replacement in patches.items():
        setattr(module, name, replacement)
    try:
        yield attempts
    finally:
        for (module, name), original in saved.items():
            setattr(module, name, original)


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable_again(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_data_root_is_prepared_predicted_and_evaluated(tiny_tree, tmp_path):
    spectralis = next(tiny_tree.glob("*Spectralis/*/oct.mhd"))
    cfg = load_config(["SPECTRALIS_AXIAL_SPACING_MM=0.03"])
    checkpoint = tmp_path / "runs" / "r" / "best.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, {"model_args": UNET, "model_state": build_unet(UNET).state_dict(), "epoch": 1,
                                 "config": config_to_dict(cfg), "metrics": {},
                                 "histogram_reference": histogram_reference(spectralis, VendorFileSettings())})
    before = {path: path.read_bytes() for path in tiny_tree.rglob("*") if path.is_file()}
    _make_read_only(tiny_tree)
    try:
        with read_only(tiny_tree) as attempts:
            assert prepare_data.main(["--data-root", str(tiny_tree), "--work-dir", str(tmp_path / "work"),
                                      "--workers", "1"]) == 0
            assert predict.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred"),
                                 str(tiny_tree)]) == 0
            assert evaluate.main(["--pred", str(tmp_path / "pred"), "--data-root", str(tiny_tree),
                                  "--out", str(tmp_path / "eval")]) == 0
    finally:
        _writable_again(tiny_tree)
    assert attempts == []
    assert {path: path.read_bytes() for path in tiny_tree.rglob("*") if path.is_file()} == before
    assert len(list((tmp_path / "pred").rglob("segmentation.mhd"))) == len(list(tiny_tree.rglob("oct.mhd")))


def test_the_guard_refuses_writes_under_the_root(tmp_path):
    (tmp_path / "data").mkdir()
    with read_only(tmp_path / "data") as attempts:
        with pytest.raises(OSError, match="Read-only"):
            (tmp_path / "data" / "x.txt").write_text("x")
        (tmp_path / "elsewhere.txt").write_text("fine")
    assert attempts == [str(tmp_path / "data" / "x.txt")]
