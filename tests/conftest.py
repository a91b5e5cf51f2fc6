"""Shared fixtures: tiny RETOUCH-layout volumes written to tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from volume_factory import TINY_SPECS, write_case


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) the cores are shared out between the workers: torch's
    threads in each would otherwise wait on one another's busy cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


# Modules run first, in this order (pytest --durations on a 2-core CPU: test_train.py holds over half of the suite's
# worker time, test_predict.py the next sixth; several of their tests take 15-30 s). pytest-xdist's worksteal gives
# each worker a contiguous share of the list and moves the rest as workers run dry: with the long tests first, the
# workers end on short tests together instead of one running a long one alone. Within test_train.py the tests of
# the shared ``trained_run`` come first, so that one worker builds it before the other could wait on its lock.
FIRST_MODULES = ("tests/test_train.py", "tests/test_predict.py")


def pytest_collection_modifyitems(config, items):
    def rank(indexed):
        index, item = indexed
        module = item.nodeid.split("::")[0]
        order = FIRST_MODULES.index(module) if module in FIRST_MODULES else len(FIRST_MODULES)
        return order, "trained_run" not in getattr(item, "fixturenames", ()), index

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


@pytest.fixture(scope="module")
def fp32_inference():
    """``config.MIXED_PRECISION = False`` for a module whose tests compare the outputs of two runs byte for byte.

    oneDNN's bf16 convolutions on AMX tiles (Intel Sapphire Rapids and later) are not bit-reproducible from one run
    to the next (oneDNN 3.12 in torch 2.14.1: a few voxels' labels differ between two identical runs), while fp32
    ones are; the tests check resumed runs, ensembles and the Predictor against predict.py, not the arithmetic.
    A subprocess does not see this: pass it ``--set MIXED_PRECISION=False``.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("config.MIXED_PRECISION", False)
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_tree(tmp_path: Path, rng: np.random.Generator) -> Path:
    """``tmp_path/data`` in the official layout: 3 cases per vendor, fluids 1/2/3 and one without fluid each."""
    root = tmp_path / "data"
    number = 1
    for vendor in TINY_SPECS:
        for fluid_code in (1, None, 2 if vendor != "Topcon" else 3):
            write_case(root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}", vendor, rng, fluid_code)
            number += 1
    return root


@pytest.fixture(scope="session")
def prepared_work(tmp_path_factory) -> Path:
    """A work dir that prepare_data.py made from a small synthetic RETOUCH tree (shared by the whole session:
    tests must not change it)."""
    import prepare_data
    from utils.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root / "data", cases_per_vendor=4, small=True, seed=3)
    status = prepare_data.main(["--data-root", str(root / "data"), "--work-dir", str(root / "work"),
                                "--workers", "1"])
    assert status == 0
    return root / "work"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from more threads, and OpenMP threads waiting on busy cores cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
