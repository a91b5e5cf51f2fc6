"""utils/io/parallel.py map_cases, in this process and in spawned worker processes."""

import os

import pytest

from process_helpers import parse_after_pause
from utils.io.parallel import map_cases

# The first item fails after a pause: with 2 workers the other items, and the second failure, finish before it,
# so results and errors come back out of order unless map_cases puts them back in the order of the items.
ITEMS = ["0.5:first-bad", "0:1", "0:second-bad", "0:3"]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_and_errors_in_input_order(workers):
    results, errors = map_cases(parse_after_pause, ITEMS, workers=workers, desc="test")
    assert [None if result is None else result[0] for result in results] == [None, 1, None, 3]
    assert len(errors) == 2  # one line per failing item, naming it
    assert "'first-bad'" in errors[0] and "'second-bad'" in errors[1]
    assert all("\n" not in line for line in errors)
    pids = {result[1] for result in results if result is not None}
    if workers == 1:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids  # the work ran in the worker processes


def test_an_error_that_is_not_about_the_case_propagates():
    with pytest.raises(AttributeError):  # a bug, not a bad case: not turned into an error line
        map_cases(parse_after_pause, [None, "0:1"], workers=1, desc="test")
