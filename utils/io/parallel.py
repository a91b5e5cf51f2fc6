"""Running one function over many cases in worker processes, with a progress bar and per-case errors."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable

from tqdm import tqdm

from utils.io.files import error_line
from utils.io.mhd_io import VolumeError

# Problems with one case's files: reported, and the other cases go on. Anything else is a bug and propagates.
CASE_ERRORS = (VolumeError, ValueError, OSError)


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _guarded(function: Callable[[Any], Any], item: Any) -> tuple[Any, str | None]:
    try:
        return function(item), None
    except CASE_ERRORS as error:
        return None, error_line(error) if isinstance(error, OSError) else str(error)


def map_cases(function: Callable[[Any], Any], items: Iterable[Any], workers: int, desc: str,
              ) -> tuple[list[Any], list[str]]:
    """Calls ``function(item)`` for every item, in ``workers`` processes (in this one when ``workers <= 1``).

    Args:
        function: a picklable (module-level) function of one item.
        items: e.g. cases.
        workers: number of processes.
        desc: label of the progress bar.

    Returns:
        ``(results, errors)``: results in the order of ``items`` (None where the item failed), and one line per
        failed item (the exception message, which names the file), also in the order of ``items``.
    """
    items = list(items)
    outcomes: list[tuple[Any, str | None]] = [(None, None)] * len(items)
    if workers <= 1 or len(items) <= 1:
        for index, item in enumerate(tqdm(items, desc=desc, unit="case")):
            outcomes[index] = _guarded(function, item)
    else:
        # spawn: the workers must not inherit threads (BLAS, torch) from a parent that imported them
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
            futures = {pool.submit(_guarded, function, item): index for index, item in enumerate(items)}
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="case"):
                outcomes[futures[future]] = future.result()
    return [result for result, _ in outcomes], [error for _, error in outcomes if error]
