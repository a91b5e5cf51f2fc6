"""Module-level functions for tests that run code in spawned worker processes (which import them by name: a test
module itself is not importable there under pytest's importlib mode)."""

from __future__ import annotations

import os
import time


def parse_after_pause(item: str) -> tuple[int, int]:
    """``"<seconds>:<integer>"`` -> ``(integer, this process's id)`` after sleeping that long.

    Raises:
        ValueError: the integer part is not an integer (``int``'s message quotes the item's text).
    """
    pause, _, text = item.partition(":")
    time.sleep(float(pause))
    return int(text), os.getpid()
