"""Fixtures of the prediction tests."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def reproducible_runs(fp32_inference):
    """Every run of these modules in fp32: many compare two runs' outputs byte for byte
    (see :func:`conftest.fp32_inference`)."""
