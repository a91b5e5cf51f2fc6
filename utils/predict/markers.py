"""A case's marker, ``OUT/<case>/prediction.json``: written last, it records the run identity (checkpoint and
inference settings), the input and the case's ``volumes.csv`` row, so a rerun skips a case whose marker matches and
whose requested files exist, and redoes the others."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from utils.io.cases import Case
from utils.io.files import atomic_write_text
from utils.io.mhd_io import volume_files
from utils.predict import etdrs
from utils.predict.outputs import Outputs, probability_paths, segmentation_path
from utils.predict.settings import INFERENCE_SETTINGS, PredictSettings

MARKER_FILE = "prediction.json"  # OUT/<case>/<this>: written last, marks the case complete
# the settings a marker records: a case made with others is redone (the batch size changes no output)
IDENTITY_SETTINGS = tuple(name for name in INFERENCE_SETTINGS if name != "INFERENCE_BATCH_SIZE")


def checkpoint_digest(checkpoint_path: Path) -> str:
    """SHA-256 of the checkpoint file, hex: tells a retrained ``best.pt`` from the one it replaced, even at the same
    path and epoch."""
    with open(checkpoint_path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def run_identity(checkpoint_path: Path, checkpoint: dict, settings: PredictSettings) -> dict:
    """What a case's outputs depend on besides its volume: a rerun redoes a case whose marker says otherwise.

    The checkpoint counts by path, epoch and content (:func:`checkpoint_digest`), so a model retrained into the
    same run folder is never taken for the one whose outputs are there; the settings are ``IDENTITY_SETTINGS``
    (config names, as ``settings`` holds them).
    """
    return {"checkpoint": str(checkpoint_path.resolve()), "epoch": checkpoint.get("epoch"),
            "checkpoint_sha256": checkpoint_digest(checkpoint_path), "settings": settings.by_name(IDENTITY_SETTINGS)}


def ensemble_identity(checkpoint_paths: list[Path], checkpoints: list[dict], settings: PredictSettings) -> dict:
    """:func:`run_identity` of one checkpoint, or of an ensemble: then ``checkpoint``, ``epoch`` and
    ``checkpoint_sha256`` are lists in the members' order."""
    identities = [run_identity(path, checkpoint, settings) for path, checkpoint in zip(checkpoint_paths, checkpoints)]
    if len(identities) == 1:
        return identities[0]
    return {**identities[0], **{key: [identity[key] for identity in identities]
                                for key in ("checkpoint", "epoch", "checkpoint_sha256")}}


def read_marker(case_dir: Path) -> dict | None:
    """The marker in ``case_dir``, or None when there is none or it cannot be read."""
    try:
        return json.loads((case_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def marker_matches(marker: dict | None, identity: dict) -> bool:
    """Whether ``marker`` was written by a run of this ``identity``."""
    # through JSON, so tuples and lists compare equal
    expected = json.loads(json.dumps(identity))
    return marker is not None and all(marker.get(key) == value for key, value in expected.items())


def remove_marker(case_dir: Path) -> None:
    """Removes the marker of ``case_dir``, if any: an old marker must not vouch for half-replaced outputs."""
    (case_dir / MARKER_FILE).unlink(missing_ok=True)


def write_marker(case_dir: Path, identity: dict, case: Case, row: dict) -> None:
    """Writes the marker of ``case`` (atomically, after all its other files): ``identity``, input and result."""
    marker = {**identity, "oct_path": str(case.oct_path.resolve()), "result": row}
    atomic_write_text(case_dir / MARKER_FILE, json.dumps(marker, indent=2) + "\n")


def _complete(path: Path) -> bool:
    return all(file.is_file() for file in volume_files(path))


def finished_result(case: Case, case_dir: Path, identity: dict, settings: PredictSettings,
                    outputs: Outputs = Outputs()) -> dict | None:
    """The saved volumes.csv row of a case already segmented from the same volume with this identity, whose
    segmentation (and, when ``outputs`` asks for them, probability volumes) exist in ``outputs.format`` and whose row
    has every ETDRS column of this version; else None. ``settings`` names the files and the fluids."""
    marker = read_marker(case_dir)
    wanted = [segmentation_path(case_dir, settings.segmentation_file, outputs.format)]
    if outputs.probabilities:
        wanted += probability_paths(case_dir, settings.probability_file, settings.fluids, outputs.format).values()
    if not (marker_matches(marker, identity) and marker.get("oct_path") == str(case.oct_path.resolve())
            and all(_complete(path) for path in wanted)):
        return None
    result = marker.get("result")
    if not isinstance(result, dict) or set(etdrs.etdrs_columns(list(settings.fluids))) - set(result):
        return None  # made by a version whose volumes.csv row lacks columns of today's: redone
    return result
