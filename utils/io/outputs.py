"""One guard for every path a script writes: never inside (or onto) what it reads.

Each script lists its outputs (folders and files, path settings such as ``SLICE_INDEX_CSV`` joined to WORK_DIR
included) and its inputs; :func:`check_outputs` refuses the run before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from utils.errors import ConfigError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(outputs: Iterable[tuple[str, str | Path]], input_roots: Iterable[tuple[str, str | Path | None]],
                  input_files: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """Refuses outputs that lie inside an input root, or are an input file or folder themselves.

    Args:
        outputs: ``(what, path)`` of each output (e.g. ``("--out", out_dir)``, ``("SLICE_INDEX_CSV", path)``).
        input_roots: ``(what, folder)``: nothing may be written inside them (the data root, input case folders).
            Entries that are None or do not exist are skipped.
        input_files: ``(what, path)``: inputs that outputs must not replace, though writing beside or below them
            is allowed (a split file, ``evaluate.py --pred``).

    Raises:
        ConfigError: naming the output, the input and how to fix it.
    """
    roots = [(what, Path(root), Path(root).resolve()) for what, root in input_roots
             if root is not None and str(root) != "" and Path(root).exists()]
    files = [(what, Path(path), Path(path).resolve()) for what, path in input_files
             if path is not None and str(path) != "" and Path(path).exists()]
    for what, output in outputs:
        resolved = Path(output).resolve()
        for input_what, root, root_resolved in roots:
            if _inside(resolved, root_resolved):
                raise ConfigError(f"{output}: {what} lies inside the {input_what} {root}, and the pipeline never "
                                  f"writes into its inputs; choose a {what} outside it")
        for input_what, path, path_resolved in files:
            if resolved == path_resolved:
                raise ConfigError(f"{output}: {what} is the {input_what} {path} itself, which would be "
                                  f"overwritten; choose another {what}")
