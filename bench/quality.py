"""Segmentation quality of named configurations, on the synthetic set and on the real development set.

    python bench/quality.py [--dataset synthetic|real|both] [--configs default,adversarial] [--seeds 0,1]
                            [--epochs 15] [--budget-minutes 0] [--out work/quality] [--set NAME=VALUE ...]
                            [--folds SPEC]
    python bench/quality.py --smoke                  # a few minutes: tiny synthetic set, a few batches per fold
    python bench/quality.py --table-only [--out DIR] # the tables of every result JSON under --out, again

Runs the pipeline as a user would, each script as a subprocess (``prepare_data.py`` -> ``train.py`` ->
``predict.py`` -> ``evaluate.py``), for every (dataset, config, seed), and scores the test cases' label volumes.

Data sets:
- ``synthetic``: ``python -m utils.synthetic`` (18 cases, 6 per vendor; ``--smoke``: ``--small``) in
  OUT/data/synthetic, one fold: the split prepare_data.py makes (SPLIT_FRACTIONS, SPLIT_SEED: 12 train, 3 val,
  3 test cases).
- ``real``: the Duke DME development set (5 Spectralis patients DUKE01..DUKE05, 11 annotated B-scans each), built
  by /work/shared/data/duke_dev/build.py into OUT/data/duke_dev (OUT must lie outside the repository or in a
  git-ignored folder: nothing derived from real scans may be tracked). Patient-level folds: test {DUKE01, DUKE02},
  then test {DUKE03, DUKE04, DUKE05}; in each fold the last training patient (by number) is the validation case
  (which picks best.pt), the others train. Each fold's split CSV (columns ``case, split``) is written to
  OUT/real/splits/ and given to prepare_data.py with ``--split-file``. ``--folds`` sets other folds.

Budget, as work: ``--epochs E`` (default 15) is passed to train.py as ``--set EPOCHS=E``; an epoch is
``BATCHES_PER_EPOCH`` batches of ``BATCH_SIZE`` patches (the config's; 0 = one pass over the training stream, the
authors' epoch), so a budget means the same training on every machine. Minutes differ 2-3x between CPUs (native
bf16 or fp32 only) and more on a GPU: each result records the training minutes and the machine (CPU model, cores
and precision, or the GPU) beside the epochs. ``--budget-minutes M`` (default 0 = none) adds a wall-clock cap
(``TRAIN_BUDGET_MINUTES``: training stops within the epoch during which it runs out). A full run of one config and
one seed on both data sets trains 3 folds, plus about 5 minutes of preparing and predicting. ``--smoke``: tiny
synthetic set, 2 epochs of 3 batches, VAL_BSCANS=8, a 1-minute cap, output in work/quality-smoke (a few minutes on
the 2-core CPU; it checks that everything runs, not quality).

Measures (fluid merged: a voxel is fluid when its label is > 0 in the prediction and in the reference, because the
real masks do not tell fluid types apart), from each test case's OUT/.../pred/<case>/segmentation.mhd against its
reference.mhd, read with SimpleITK (see bench/quality_measures.py):
- Dice per fold (``pooled Dice``): sum of 2 TP / sum of (|P| + |G|) over all test B-scans of the fold; pooled over
  folds the same way over every test B-scan of every fold (each patient is tested once). Undefined (``-``) when
  neither prediction nor reference holds fluid.
- per-patient Dice: the same over one patient's (case's) B-scans (in the JSON; their mean as well).
- Dice on columns 100..649: the same counting only columns x = 100..649 (0-based, both ends included: x in
  [100, 650)), because the real set's unannotated edge columns were set to 0 in image and mask. On the synthetic
  set (512, or 128 columns wide with --small) it is clipped to the width and means little.
- absolute volume difference: |predicted - reference| fluid voxels x voxel volume (from the header spacing) in
  mm^3, per patient, then the mean over patients (the real set's spacing is approximate: indicative only).
- area ratio: predicted / reference fluid area (mm^2, summed over the B-scans): > 1 over-, < 1 under-segmentation.
- training time: wall clock around the train.py subprocess (Python start-up included), in minutes per fold, and
  the epochs done (rows of the run's log.csv).
- synthetic set also: evaluate.py's RETOUCH summary (summary.csv, all vendors): per fluid the mean Dice over cases
  holding the fluid and over all cases (absent from both = 1.0), and the detection AUC.

Outputs under OUT (default work/quality):
    results/<dataset>-<run>-seed<s>.json     everything about one run (settings, commands, per fold: cases,
                                             training time and epochs, per-case counts and measures, pooled
                                             measures, evaluate.py summary; pooled over folds)
    <dataset>/<run>/seed<s>/<fold>/          run/ (train.py run folder), pred/ (predict.py; pred/evaluation/:
                                             evaluate.py), train.log, predict.log, evaluate.log (the scripts'
                                             output), train_time.json
    <dataset>/prepared/<fold>/, <dataset>/splits/, data/   prepare_data.py work dirs, split CSVs, the data sets
    synthetic/pretrain-<config>[-<E>ep]/seed<s>/   a "pretrain" config's run on the whole synthetic set (E
                                             epochs; its real folds' --init-from)
A rerun skips every run whose result JSON exists (and was made with the same settings: otherwise it stops with
status 2) and reuses finished training; an interrupted run is simply started again. Markdown tables are printed
at the end: one row per config and seed, then the mean and spread (max - min) over seeds per config.
<run> is the config's name, with the epochs appended (``smp_unet-30ep``) when they are not the standard 15 (2 with
--smoke), and a wall-clock cap (``-20min``) when one is given: runs of one config at several budgets keep their own
folders, results and table rows.

Exit status: 0 all runs done; 1 some run failed (each named with its data set, config, seed, fold and failing
step, and the script's log); 2 usage error.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import difflib
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: utils (machine_description)

from report_tables import format_number, markdown_table  # noqa: E402
from quality_measures import MeasureError, case_measures, pooled_measures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A config: --set overrides for train.py ("train") and predict.py ("predict": only settings predict.py takes from
# its command line, such as INFERENCE_TILE_SHAPE; all others come from the checkpoint), and optionally for
# prepare_data.py ("prepare": then the config gets prepared data of its own).
# "default": the authors' method (config.py as it is). "smp_unet": the pipeline's choices before the method became
# the default (smp ResNet18 U-Net, balanced CE + 4-class Dice, stratified centres, in-place augmentation, fluid
# stratification, 50-batch epochs, best by Dice, whole B-scans segmented).
# The pipeline's batch mixing before the original's became the default: the kept patches shuffled in a buffer of
# 4 x BATCH_SIZE, nothing shuffled before, partial batches kept (the smp_unet configs were measured with it)
EARLIER_MIXING = ["BSCAN_SHUFFLE_BUFFER=0", "PATCH_SHUFFLE_BUFFER=0", "KEPT_PATCH_SHUFFLE_BUFFER=64",
                  "DROP_PARTIAL_BATCH=False"]
# ... its validation: 48 fixed B-scans, the same patches every epoch; and its depth scale: the header's spacing
EARLIER_VALIDATION = ["VAL_BSCANS=48", "VAL_FRESH_PATCHES=False"]
EARLIER_SCALING = ["DEPTH_SCALE=spacing"]
SMP_UNET = ["MODEL=smp_unet", "LOSS=balanced_ce_dice", "PATCH_CENTRES=stratified", "PATCHES_PER_BSCAN=8",
            "PATCH_BORDER=16", "AUGMENT=replace", "STRATIFY_BY=fluid", "BATCHES_PER_EPOCH=50",
            "EMPTY_PATCH_DROP_PROB=0.8", "DROP_EMPTY_IN_VALIDATION=False", "BEST_BY=dice_mean_fluid",
            *EARLIER_MIXING, *EARLIER_VALIDATION, *EARLIER_SCALING]
SMP_UNET_CE_DICE = ["LOSS=ce_dice" if item.startswith("LOSS=") else item for item in SMP_UNET]
# The preset "improved_patches" (config.PRESETS): plain CE + Dice and poly decay, trained without validation cases
IMPROVED = SMP_UNET_CE_DICE + ["LR_SCHEDULE=poly"]


def preset_like(train: list[str], *predict: str) -> dict:
    """A trained config as the presets were measured: train.py's ``train`` settings, every non-test patient trained
    on (``no_validation``), whole B-scans segmented (``PREDICT_REGION=all``, then ``predict``'s settings)."""
    return {"train": train, "predict": ["PREDICT_REGION=all", *predict], "no_validation": True}


def with_settings(base: list[str], *items: str) -> list[str]:
    """``base`` --set items with ``items`` in place of those of the same names (added at the end when new)."""
    names = {item.partition("=")[0] for item in items}
    return [item for item in base if item.partition("=")[0] not in names] + list(items)


# ... on full-depth strips: 512 x 128 patches in batches of 8 (the same pixels per batch), the kept patches shuffled
# in the earlier 4 x BATCH_SIZE
IMPROVED_STRIPS = with_settings(IMPROVED, "PATCH_SHAPE=(512, 128)", "BATCH_SIZE=8", "KEPT_PATCH_SHUFFLE_BUFFER=32")
# ... on strips twice as wide: 512 x 256 in batches of 4 (`--preset improved`)
IMPROVED_WIDE = with_settings(IMPROVED_STRIPS, "PATCH_SHAPE=(512, 256)", "BATCH_SIZE=4", "KEPT_PATCH_SHUFFLE_BUFFER=16")
# ... in batches of 8 strips, the kept strips shuffled in 4 x BATCH_SIZE
BATCHES_OF_8 = ("BATCH_SIZE=8", "KEPT_PATCH_SHUFFLE_BUFFER=32")
# ... at half the depth resolution: one network row spans two Spectralis rows; a 256-row strip holds the whole depth
HALF_DEPTH = with_settings(IMPROVED_WIDE, "SPECTRALIS_AXIAL_SPACING_MM=0.0078", "PATCH_SHAPE=(256, 256)")
BLANK_PREDICT = ["BLANK_COLUMNS_BACKGROUND=True"]
# `make demo`'s budget as work (--epochs 1): 40 batches, about its 3 minutes of rmit_unet on a 2-core bf16 CPU,
# validated on its 48 fixed B-scans
DEMO_BUDGET = ["BATCHES_PER_EPOCH=40", "VAL_BSCANS=48", "VAL_FRESH_PATCHES=False"]
# Post-processing beyond the method (predict.py settings only): flip TTA, presence gating, small components removed
# (0.0005 mm³ is about 100 voxels of the real set, a cyst of 10 x 10 pixels).
ROTATE_TTA = ["TTA_ROTATE_DEGREES=(-5.0, 5.0)"]  # test-time rotations, both ways
POST = ["TTA_FLIP=True", "PRESENCE_GATE=0.5", "MIN_COMPONENT_MM3=0.0005"]
# Each fluid closed per B-scan by an ellipse of 0.1 mm (predict.py only): 9 columns by 26 rows of the real set
CLOSE = ["FLUID_CLOSING_MM=0.1"]


def tta_rot_of(trained: str, ensemble_seeds: tuple[int, ...] = ()) -> dict:
    """A predict-only config: the runs of config ``trained`` segmenting whole B-scans with the test-time flip and
    rotations, the models of ``ensemble_seeds`` as an ensemble when given (else each seed's model alone)."""
    return {"train_as": trained, "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *ROTATE_TTA],
            **({"ensemble_seeds": ensemble_seeds} if ensemble_seeds else {})}


# A config is {"train": train.py overrides, "predict": predict.py overrides}; "train_as": NAME reuses the trained
# runs of config NAME (a predict-only variant: no training of its own); "prepare": prepare_data.py overrides;
# "no_validation": True trains a real-set fold on its validation patient too (no validation: best.pt is the last
# epoch), so fold 2 learns from two patients instead of one; "ensemble_seeds": (0, 1) predicts with the models of
# those seeds together (predict.py --checkpoint A B: an ensemble); "ensemble_members": ((NAME, SEED, EPOCHS), ...)
# predicts with the models of other configs, each trained (or reused) at its own budget (EPOCHS; None: --epochs).
# "snapshots": K predicts with the K cycle-end snapshots of its (SNAPSHOT_CYCLES=K) training run as an ensemble.
# "pretrain": EPOCHS first trains the config on the whole synthetic set (every case trained on, EPOCHS epochs, the
# same settings and seed) and starts each real-set fold from those weights (train.py --init-from): transfer from the
# built-in generator's anatomy, no real scan involved.
# preset_like(TRAIN, *PREDICT) is a trained config with no_validation and whole B-scans segmented; tta_rot_of(NAME)
# is a predict-only config of NAME's runs with the test-time flip and rotations.
CONFIGS: dict[str, dict] = {
    "default": {"train": [], "predict": []},
    "default_roi": {"train_as": "default", "predict": ["PREDICT_REGION=roi"]},
    # the authors' network with batch-norm running statistics that converge within a CPU budget
    "rmit_bn": {"train": ["BN_MOMENTUM=0.1"], "predict": []},
    "rmit_bn_post": {"train_as": "rmit_bn", "predict": ["PREDICT_REGION=roi", *POST]},
    # the authors' method, training untouched, its batch-norm statistics re-estimated over 50 batches before each
    # validation and save (BN_REESTIMATE_BATCHES)
    "rmit_bnre": {"train": ["BN_REESTIMATE_BATCHES=50"], "predict": []},
    # ... with the pipeline's earlier batch mixing, or its earlier validation, in place of the original's: what
    # each restored behaviour changes
    "rmit_bnre_earlymix": {"train": ["BN_REESTIMATE_BATCHES=50", *EARLIER_MIXING], "predict": []},
    "rmit_bnre_earlyval": {"train": ["BN_REESTIMATE_BATCHES=50", *EARLIER_VALIDATION], "predict": []},
    # the authors' network at the demo's budget: the original's batch-norm momentum, the demo's former 0.1, or the
    # running statistics re-estimated over 20 batches before the save
    "demo_plain": {"train": DEMO_BUDGET, "predict": []},
    "demo_bn": {"train": [*DEMO_BUDGET, "BN_MOMENTUM=0.1"], "predict": []},
    "demo_bnre": {"train": [*DEMO_BUDGET, "BN_REESTIMATE_BATCHES=20"], "predict": []},
    # the demo's preset (DEMO_PRESET, smp's U-Net) at the demo's former work, one epoch of 40 batches (--epochs 1):
    # fast on a CPU without bf16 too
    "demo_improved": {"train": with_settings(IMPROVED, "BATCHES_PER_EPOCH=40"), "predict": ["PREDICT_REGION=all"]},
    # ... at twice its training batches: does the demo's one epoch then segment on every seed and precision?
    "demo_improved_b80": {"train": with_settings(IMPROVED, "BATCHES_PER_EPOCH=80"), "predict": ["PREDICT_REGION=all"]},
    # ... the same 80 steps as four epochs of 20 (run with --epochs 4; the demo's work now): the poly decay then
    # lowers the rate from epoch to epoch (within one epoch it stays), and validation picks the best of the four
    # epochs' weights
    "demo_improved_e4b20": {"train": with_settings(IMPROVED, "BATCHES_PER_EPOCH=20"),
                            "predict": ["PREDICT_REGION=all"]},
    # ... its batch-norm running statistics re-estimated over 20 batches before the save: 40 steps at the method's
    # momentum (0.01) leave them a third of the way from their initial values, which eval-mode inference then uses
    "demo_improved_bnre": {"train": with_settings(IMPROVED, "BATCHES_PER_EPOCH=40", "BN_REESTIMATE_BATCHES=20"),
                           "predict": ["PREDICT_REGION=all"]},
    # ... and without the ReLU before its softmax
    "rmit_norelu": {"train": ["BN_MOMENTUM=0.1", "RELU_BEFORE_SOFTMAX=False"], "predict": []},
    "default_post": {"train_as": "default", "predict": POST},
    "smp_unet": {"train": SMP_UNET, "predict": ["PREDICT_REGION=all"]},
    "smp_unet_band": {"train_as": "smp_unet", "predict": []},
    "smp_unet_roi": {"train_as": "smp_unet", "predict": ["PREDICT_REGION=roi"]},
    "smp_unet_roi_post": {"train_as": "smp_unet", "predict": ["PREDICT_REGION=roi", *POST]},
    "smp_unet_aug": {"train": SMP_UNET + ["INTENSITY_AUGMENT=True"], "predict": ["PREDICT_REGION=all"]},
    "resnet34": {"train": SMP_UNET + ["ENCODER=resnet34"], "predict": ["PREDICT_REGION=all"]},
    # plain (unweighted) CE + Dice, nnU-Net's loss, against the balanced CE's over-segmentation
    "smp_unet_cedice": {"train": SMP_UNET_CE_DICE, "predict": ["PREDICT_REGION=all"]},
    "smp_unet_cedice_aug": {"train": SMP_UNET_CE_DICE + ["INTENSITY_AUGMENT=True"], "predict": ["PREDICT_REGION=all"]},
    # nnU-Net's polynomial learning-rate decay over the budget
    "smp_unet_poly": {"train": SMP_UNET + ["LR_SCHEDULE=poly"], "predict": ["PREDICT_REGION=all"]},
    # ... training on every non-test patient, the last (annealed) weights kept, as nnU-Net's final checkpoint
    "smp_unet_all_poly": preset_like(SMP_UNET + ["LR_SCHEDULE=poly"]),
    # the plain CE + Dice loss with both of the above
    "smp_unet_cedice_all_poly": preset_like(IMPROVED),
    # ... trained on full-depth strips (512 x 128: the whole depth of a Spectralis B-scan, zero-padded) in batches
    # of 8, the same pixels per batch: the patch sees where a pocket ends and what lies around a faint cyst
    "improved_strips": preset_like(IMPROVED_STRIPS),
    # ... never fluid in A-scans without signal (all-zero columns: the real set's unannotated edges, black borders)
    "improved_strips_blank": {"train_as": "improved_strips", "predict": ["PREDICT_REGION=all", *BLANK_PREDICT]},
    "improved_blank": {"train_as": "smp_unet_cedice_all_poly", "predict": ["PREDICT_REGION=all", *BLANK_PREDICT]},
    # ... and those A-scans left out of the loss in training too
    "improved_strips_blankloss": preset_like(
        with_settings(IMPROVED_STRIPS, "BLANK_COLUMNS_IGNORED=True"), *BLANK_PREDICT),
    # nnU-Net's optimiser (SGD, Nesterov momentum 0.99, lr 1e-2 with the poly decay, weight decay 3e-5)
    "improved_strips_sgd": preset_like(with_settings(IMPROVED_STRIPS, "OPTIMIZER=sgd", "LEARNING_RATE=1e-2")),
    # a moving average of the weights validated and saved (decay 0.99: about the last 100 steps)
    "improved_strips_ema": preset_like(with_settings(IMPROVED_STRIPS, "EMA_DECAY=0.99")),
    # a 5x higher Adam rate: the budget is short
    "improved_strips_lr1e3": preset_like(with_settings(IMPROVED_STRIPS, "LEARNING_RATE=1e-3")),
    # lateral context: strips twice as wide (512 x 256) in batches of 4, the same pixels per batch, so a patch sees a
    # large pocket's neighbours and both of its ends
    "improved_strips_wide": preset_like(IMPROVED_WIDE),
    # ... and twice as wide again (512 x 512 in batches of 2, the same pixels per batch): most of a B-scan's width
    "improved_strips_wider": preset_like(
        with_settings(IMPROVED_STRIPS, "PATCH_SHAPE=(512, 512)", "BATCH_SIZE=2", "KEPT_PATCH_SHUFFLE_BUFFER=8")),
    # ... their Dice term over the fluids only (DICE_BACKGROUND=False, nnU-Net's): the background, most of every
    # patch, no longer takes a quarter of the Dice
    "improved_strips_wide_fgdice": preset_like(with_settings(IMPROVED_WIDE, "DICE_BACKGROUND=False")),
    # nnU-Net-style scaling: half the B-scans magnified by 0.8-1.25, depth and width apart (other retinal thicknesses,
    # pockets of other sizes)
    "improved_strips_scale": preset_like(with_settings(IMPROVED_STRIPS, "SCALE_PROB=0.5", "SCALE_ANISOTROPIC=True")),
    # the models of seeds 0 and 1 as one ensemble (their softmax averaged; run it as seed 0): its training is
    # both seeds' (the table's minutes and epochs are their sums)
    # ... segmented twice, as it is and mirrored left-right, the two softmaxes averaged (test-time flip)
    "improved_strips_wide_tta": {"train_as": "improved_strips_wide",
                                 "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"]},
    # ... and rotated by -5 and +5 degrees (TTA_ROTATE_DEGREES; each mirrored too), the six softmaxes averaged
    "improved_strips_wide_tta_rot": tta_rot_of("improved_strips_wide"),
    # ... and the post-processing of round 1 (POST: the flip, fluids with presence < 0.5 removed, components under
    # 0.0005 mm³ removed)
    "improved_strips_wide_post": {"train_as": "improved_strips_wide", "predict": ["PREDICT_REGION=all", *POST]},
    # ... a moving average of its weights validated and saved (decay 0.99: about the last 100 steps)
    "improved_strips_wide_ema": preset_like(with_settings(IMPROVED_WIDE, "EMA_DECAY=0.99")),
    # ... each B-scan alone in all three input channels (INPUT_CHANNELS="repeat"): the development set's 11 B-scans lie
    # far apart, so the original's neighbour channels show other anatomy
    "improved_strips_wide_repeat": preset_like(with_settings(IMPROVED_WIDE, "INPUT_CHANNELS=repeat")),
    "improved_strips_wide_repeat_tta": {"train_as": "improved_strips_wide_repeat",
                                        "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"]},
    # ... a ResNet34 encoder in place of the ResNet18
    "improved_strips_wide_r34": preset_like(with_settings(IMPROVED_WIDE, "ENCODER=resnet34")),
    # ... the A-scans without signal left out of the loss in training and never fluid at inference
    "improved_strips_wide_blankloss": preset_like(
        with_settings(IMPROVED_WIDE, "BLANK_COLUMNS_IGNORED=True"), *BLANK_PREDICT),
    # ... intensity augmentation (gamma, contrast, speckle-like noise; INTENSITY_AUGMENT): other scanners' and
    # patients' contrast, against the overfitting of 22-33 training B-scans
    "improved_strips_wide_intensity": preset_like(with_settings(IMPROVED_WIDE, "INTENSITY_AUGMENT=True")),
    # ... the Lovasz-softmax (the Jaccard index's surrogate) in place of the soft Dice (LOSS=ce_lovasz): most of the
    # preset's errors are the outlines of pockets it found, and the Lovasz gradient goes to the worst-ranked pixels
    "improved_strips_wide_lovasz": preset_like(with_settings(IMPROVED_WIDE, "LOSS=ce_lovasz")),
    # ... squeeze-and-excitation (spatial and channel) in each decoder block (DECODER_ATTENTION=scse): the merged skip
    # features reweighted per pixel, as a cyst's wall is told from the septa between cysts
    "improved_strips_wide_scse": preset_like(with_settings(IMPROVED_WIDE, "DECODER_ATTENTION=scse")),
    # ... without the authors' rotations (ROTATE_PROB=0; the flips stay): B-scans of one device come level, and a
    # rotated strip tilts the retina's layers the grader's outlines follow
    "improved_strips_wide_norotate": preset_like(with_settings(IMPROVED_WIDE, "ROTATE_PROB=0.0")),
    # ... rotated more (the rotation proved to matter: without it fold 1 fell by a tenth): every strip rotated, or
    # by up to 20 degrees instead of 10
    "improved_strips_wide_rotate_always": preset_like(with_settings(IMPROVED_WIDE, "ROTATE_PROB=1.0")),
    "improved_strips_wide_rotate20": preset_like(with_settings(IMPROVED_WIDE, "ROTATE_MAX_DEGREES=20.0")),
    # ... more strips without fluid kept (EMPTY_PATCH_DROP_PROB 0.5 instead of 0.8): false pockets are a sixth of
    # the errors
    "improved_strips_wide_keep_empty": preset_like(with_settings(IMPROVED_WIDE, "EMPTY_PATCH_DROP_PROB=0.5")),
    # ... half the B-scans deformed elastically (ELASTIC_PROB; up to 8 pixels at control points 64 pixels apart):
    # pockets and layers of other shapes, the one kind of augmentation not yet tried beside the rotation that proved
    # to matter
    "improved_strips_wide_elastic": preset_like(with_settings(IMPROVED_WIDE, "ELASTIC_PROB=0.5")),
    # ... on strips twice as wide again: 512 x 512 in batches of 2 (the same pixels per batch, two thirds of a
    # Duke B-scan's width): strips 128 -> 256 wide gave +0.05, so does more of the B-scan in view give more?
    "improved_strips_wide512": preset_like(with_settings(IMPROVED_WIDE, "PATCH_SHAPE=(512, 512)", "BATCH_SIZE=2",
                                                         "KEPT_PATCH_SHUFFLE_BUFFER=8")),
    # ... on whole B-scans (512 x 768: the whole depth and width of a Duke B-scan), one per batch and one per B-scan
    # read (8 crops of a whole B-scan would be 8 copies): the end of the context axis (strips 128 -> 256 wide gave
    # +0.05, 256 -> 512 nothing), at three quarters of the preset's pixels per batch; batch norms then see whole
    # B-scans in training, as at inference
    "improved_whole_bscans": preset_like(with_settings(IMPROVED_WIDE, "PATCH_SHAPE=(512, 768)", "BATCH_SIZE=1",
                                                       "PATCHES_PER_BSCAN=1", "KEPT_PATCH_SHUFFLE_BUFFER=4")),
    # ... nnU-Net-style heavy augmentation: a third of the B-scans magnified (0.8-1.25, each axis its own factor), a
    # third deformed elastically, and gamma, contrast and speckle-like noise, beside the rotations and flips. Each
    # alone gave no gain at 15 epochs (elastic 0.679, intensity 0.674, scaling 0.636 on improved_strips); nnU-Net
    # trains a thousand epochs with them, so they are measured together at a longer budget (--epochs 30), where the
    # preset alone over-fitted (0.681)
    "improved_strips_wide_heavyaug": preset_like(with_settings(
        IMPROVED_WIDE, "SCALE_PROB=0.33", "SCALE_ANISOTROPIC=True", "ELASTIC_PROB=0.33", "INTENSITY_AUGMENT=True")),
    # ... ReLayNet's outline weighting of its cross-entropy (CE_BOUNDARY_WEIGHT=10: the pixels beside a change of
    # label weigh 11): three quarters of the errors lie on the outlines of pockets found
    "improved_strips_wide_boundary": preset_like(with_settings(IMPROVED_WIDE, "CE_BOUNDARY_WEIGHT=10.0")),
    # ... started from weights trained 10 epochs on the whole synthetic set ("pretrain"): layers, cysts and domes of
    # the built-in generator before the 22-33 real B-scans of a fold
    "improved_strips_wide_synpre": {**preset_like(IMPROVED_WIDE), "pretrain": 10},
    # ... a skip from the input at full resolution into the last decoder block (FULL_RESOLUTION_CHANNELS=16, 16 as
    # smp's last decoder block): smp's ResNet encoder starts at half resolution, so outlines (three quarters of the
    # errors) and cysts a few pixels wide are drawn without features of full-resolution pixels; nnU-Net's and the
    # authors' U-Nets have that level
    "improved_strips_wide_fullres": preset_like(with_settings(IMPROVED_WIDE, "FULL_RESOLUTION_CHANNELS=16")),
    # ... instance norms in place of its batch norms (NORMALIZATION=instance, nnU-Net's): a test patient's features
    # normalised by its own statistics, not by the running statistics of the 2-3 training patients
    "improved_strips_wide_instnorm": preset_like(with_settings(IMPROVED_WIDE, "NORMALIZATION=instance")),
    # ... Adam's first moment at the usual 0.9 (ADAM_BETAS=(0.9, 0.999)) instead of the method's 0.5, a GAN's setting
    # that the authors' adversarial training took from DCGAN: a steadier gradient for a network trained without one
    "improved_strips_wide_beta9": preset_like(with_settings(IMPROVED_WIDE, "ADAM_BETAS=(0.9, 0.999)")),
    # ... in batches of 8 strips (twice the strips per step, the same steps: twice the training time): a steadier
    # gradient, and every training B-scan seen twice as often, without the longer schedule that over-fitted
    "improved_strips_wide_b8": preset_like(with_settings(IMPROVED_WIDE, *BATCHES_OF_8)),
    # ... at half the depth resolution (SPECTRALIS_AXIAL_SPACING_MM=0.0078: one network row spans two Spectralis rows,
    # 7.8 um, still finer than an A-scan's 11 um): a 256 x 256 strip still holds the whole depth, so batches of 8
    # carry the preset's pixels with twice its strips (twice the B-scans per step, the same time per step) ...
    "improved_half_depth": preset_like(with_settings(HALF_DEPTH, *BATCHES_OF_8)),
    # ... or batches of 4 (the preset's strips per step at half its pixels: about half the time per epoch)
    "improved_half_depth_b4": preset_like(HALF_DEPTH),
    # ... its 15 epochs as three cycles of 5, the poly decay restarting in each (SNAPSHOT_CYCLES=3): the last weights
    # alone, and the three cycles' snapshots as an ensemble (Huang et al. 2017), with the test-time flip: an
    # ensemble for the training of one model
    "improved_strips_wide_snap3": preset_like(with_settings(IMPROVED_WIDE, "SNAPSHOT_CYCLES=3"), "TTA_FLIP=True"),
    "improved_strips_wide_snap3_ens": {"train_as": "improved_strips_wide_snap3",
                                       "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"], "snapshots": 3},
    # ... its decoder half as wide (DECODER_CHANNELS (128, 64, 32, 16, 8)): about a third faster per batch on a CPU,
    # fewer weights for 22-33 training B-scans
    "improved_strips_wide_dec_half": preset_like(with_settings(IMPROVED_WIDE, "DECODER_CHANNELS=(128, 64, 32, 16, 8)")),
    # ... deep supervision (nnU-Net's): heads on the decoder at 1/2, 1/4 and 1/8 of the strip share the loss
    "improved_strips_wide_ds": preset_like(with_settings(IMPROVED_WIDE, "DEEP_SUPERVISION=True")),
    # ... each fluid closed per B-scan by an ellipse of 0.1 mm (FLUID_CLOSING_MM; predict only): pockets up to about
    # 0.2 mm apart joined into one region, as the Duke grader outlines some clusters of cysts
    "improved_strips_wide_close": {"train_as": "improved_strips_wide", "predict": ["PREDICT_REGION=all", *CLOSE]},
    "improved_strips_wide_tta_close": {"train_as": "improved_strips_wide",
                                       "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *CLOSE]},
    "improved_strips_wide_ds_close": {"train_as": "improved_strips_wide_ds", "predict": ["PREDICT_REGION=all", *CLOSE]},
    "improved_strips_ens2": {"train_as": "improved_strips", "predict": ["PREDICT_REGION=all"],
                             "ensemble_seeds": (0, 1)},
    "improved_strips_wide_ens2": {"train_as": "improved_strips_wide", "predict": ["PREDICT_REGION=all"],
                                  "ensemble_seeds": (0, 1)},
    # ... with the test-time flip: each member segments each B-scan as it is and mirrored, all four softmaxes averaged
    "improved_strips_wide_ens2_tta": {"train_as": "improved_strips_wide",
                                      "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"], "ensemble_seeds": (0, 1)},
    # ... other pairs of seeds, and all three, with the test-time flip: the spread between ensembles
    "improved_strips_wide_ens2_02_tta": {"train_as": "improved_strips_wide",
                                         "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"], "ensemble_seeds": (0, 2)},
    "improved_strips_wide_ens2_12_tta": {"train_as": "improved_strips_wide",
                                         "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"], "ensemble_seeds": (1, 2)},
    "improved_strips_wide_ens2_tta_close": {"train_as": "improved_strips_wide",
                                            "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *CLOSE],
                                            "ensemble_seeds": (0, 1)},
    "improved_strips_wide_ens3_tta": {"train_as": "improved_strips_wide",
                                      "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"], "ensemble_seeds": (0, 1, 2)},
    # ... each B-scan also segmented rotated by -5 and +5 degrees (TTA_ROTATE_DEGREES; each mirrored too), the softmaxes
    # rotated back and averaged: the training rotations, the one augmentation that proved to matter, at test time
    "improved_strips_wide_ens3_tta_rot": tta_rot_of("improved_strips_wide", (0, 1, 2)),
    # ... two models (each pair of the three seeds): the README's recipe with the test-time rotations
    "improved_strips_wide_ens2_tta_rot": tta_rot_of("improved_strips_wide", (0, 1)),
    # the two 512 x 512 strip models (improved_strips_wide512, seeds 0 and 1) alone and as an ensemble, with the
    # flip and rotations: does the wider context pay as averaged models, where single models are level?
    "improved_strips_wide512_tta_rot": tta_rot_of("improved_strips_wide512"),
    "improved_strips_wide512_ens2_tta_rot": tta_rot_of("improved_strips_wide512", (0, 1)),
    "improved_strips_wide512_ens2_02_tta_rot": tta_rot_of("improved_strips_wide512", (0, 2)),
    "improved_strips_wide512_ens2_12_tta_rot": tta_rot_of("improved_strips_wide512", (1, 2)),
    "improved_strips_wide_ens2_02_tta_rot": tta_rot_of("improved_strips_wide", (0, 2)),
    "improved_strips_wide_ens2_12_tta_rot": tta_rot_of("improved_strips_wide", (1, 2)),
    # ... the fourth pair and a second triple (seeds 3 and 4 trained later), and all five models: what models beyond
    # three still buy, within the hour of training (5 x 7-8 minutes per fold on a 2-core bf16 CPU)
    "improved_strips_wide_ens2_34_tta_rot": tta_rot_of("improved_strips_wide", (3, 4)),
    "improved_strips_wide_ens3_234_tta_rot": tta_rot_of("improved_strips_wide", (2, 3, 4)),
    "improved_strips_wide_ens5_tta": {"train_as": "improved_strips_wide",
                                      "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"],
                                      "ensemble_seeds": (0, 1, 2, 3, 4)},
    "improved_strips_wide_ens5_tta_rot": tta_rot_of("improved_strips_wide", (0, 1, 2, 3, 4)),
    # two deep-supervision models (seeds 0 and 2; run with --epochs 30) as an ensemble, with the test-time flip
    "improved_strips_wide_ds_ens2_02_tta": {"train_as": "improved_strips_wide_ds",
                                            "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"],
                                            "ensemble_seeds": (0, 2)},
    # the two INPUT_CHANNELS="repeat" models (seeds 0 and 1) as an ensemble, with the test-time flip
    "improved_strips_wide_repeat_ens2_tta": {"train_as": "improved_strips_wide_repeat",
                                             "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"],
                                             "ensemble_seeds": (0, 1)},
    # a preset model (15 epochs) and a deep-supervision model (30 epochs) as one ensemble, with the test-time flip:
    # the two recipes' errors differ by fold (deep supervision gains on fold 2). The preset's seed 0 with deep
    # supervision's 2, its seeds 1 and 2 with deep supervision's 0; run each as seed 0 (the members name their own
    # seeds)
    "improved_mix_ds_tta": {"ensemble_members": (("improved_strips_wide", 0, 15), ("improved_strips_wide_ds", 2, 30)),
                            "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"]},
    "improved_mix_ds_10_tta": {"ensemble_members": (("improved_strips_wide", 1, 15),
                                                    ("improved_strips_wide_ds", 0, 30)),
                               "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"]},
    "improved_mix_ds_20_tta": {"ensemble_members": (("improved_strips_wide", 2, 15),
                                                    ("improved_strips_wide_ds", 0, 30)),
                               "predict": ["PREDICT_REGION=all", "TTA_FLIP=True"]},
    # ... the three mixed pairs with the test-time rotations too
    "improved_mix_ds_tta_rot": {"ensemble_members": (("improved_strips_wide", 0, 15),
                                                     ("improved_strips_wide_ds", 2, 30)),
                                "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *ROTATE_TTA]},
    "improved_mix_ds_10_tta_rot": {"ensemble_members": (("improved_strips_wide", 1, 15),
                                                        ("improved_strips_wide_ds", 0, 30)),
                                   "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *ROTATE_TTA]},
    "improved_mix_ds_20_tta_rot": {"ensemble_members": (("improved_strips_wide", 2, 15),
                                                        ("improved_strips_wide_ds", 0, 30)),
                                   "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", *ROTATE_TTA]},
    "improved_strips_blank_ens2": {"train_as": "improved_strips", "predict": ["PREDICT_REGION=all", *BLANK_PREDICT],
                                   "ensemble_seeds": (0, 1)},
}
# The preset's models with the flip, labelled by a fluid threshold (FLUID_THRESHOLD: fluid where 1 - p(background)
# reaches it) instead of the arg-max: improved_strips_wide_tta_thr30 ... _thr70. A threshold is only honest when chosen
# on other patients than those it is measured on: bench/threshold_choice.py picks each fold's from the other fold.
FLUID_THRESHOLD_PERCENTS = (30, 40, 50, 60, 70)
CONFIGS.update({f"improved_strips_wide_tta_thr{percent}": {
    "train_as": "improved_strips_wide",
    "predict": ["PREDICT_REGION=all", "TTA_FLIP=True", f"FLUID_THRESHOLD={percent / 100}"]}
    for percent in FLUID_THRESHOLD_PERCENTS})
# config.PRESETS[name] is the config's train and predict overrides with EPOCHS at DEFAULT_EPOCHS: the budget it was
# measured at (tests/test_configuration.py keeps them equal)
PRESET_CONFIGS = {"improved_patches": "smp_unet_cedice_all_poly", "improved_strips": "improved_strips",
                  "improved": "improved_strips_wide"}
DATASETS = ("synthetic", "real")
REAL_CASES = ("DUKE01", "DUKE02", "DUKE03", "DUKE04", "DUKE05")
REAL_FOLDS = "DUKE01+DUKE02;DUKE03+DUKE04+DUKE05"
REAL_BUILD_SCRIPT = Path("/work/shared/data/duke_dev/build.py")
COLUMNS = (100, 650)  # x in [100, 650): columns 100..649, where the real masks are annotated
DEFAULT_EPOCHS = 15
DEFAULT_OUT = "work/quality"
SMOKE_OUT = "work/quality-smoke"
SMOKE_EPOCHS = 2
SMOKE_BUDGET_MINUTES = 1.0
SMOKE_TRAIN = ["BATCHES_PER_EPOCH=3", "VAL_BSCANS=8"]
BUDGET_SETTING = "TRAIN_BUDGET_MINUTES"
SYNTHETIC_FOLD = "split"  # the synthetic set's one fold: prepare_data.py's own split
RUN_LOG_CSV = "log.csv"  # train.py: one row per epoch in the run folder
TRAIN_MARKER = "train_time.json"  # <fold dir>/<this>: training finished, its wall time and command
RESULT_VERSION = 2  # 2: budgets in epochs (1: in minutes)


class UsageError(Exception):
    """A mistake in the command line; exit status 2."""


class StepFailed(Exception):
    """A pipeline step that failed; the message names the step, and ``log`` the file holding its output."""

    def __init__(self, step: str, message: str, log: Path | None = None):
        super().__init__(message)
        self.step, self.log = step, log


@dataclasses.dataclass(frozen=True)
class Fold:
    """A fold: its name and cases by split (synthetic: filled in from prepare_data.py's split.csv)."""

    name: str
    test: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    train: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"test": list(self.test), "val": list(self.val), "train": list(self.train)}

    def without_validation(self) -> "Fold":
        """The same fold with its validation cases moved to training."""
        return Fold(self.name, self.test, (), tuple(sorted(self.train + self.val)))


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def _names(text: str, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--{what} {text!r}: expected a comma-separated list of {what}")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            raise UsageError(f"--{what}: unknown name {name!r}" + (f"; did you mean {close[0]}?" if close else "")
                             + f" (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` text (``0,1``) -> the seeds in their order, each once; UsageError for anything else."""
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r}: expected at least one seed")
    return list(dict.fromkeys(seeds))


def parse_folds(text: str) -> list[Fold]:
    """``TEST[:VAL];...`` with cases joined by ``+`` -> folds of the real set; train = the remaining patients.

    Without ``:VAL`` the last remaining patient (by name) validates. Test sets must not overlap, and a fold names
    each patient once.
    """
    folds, tested = [], set()
    for fold_number, part in enumerate([p for p in text.split(";") if p.strip()], 1):
        test_text, _, val_text = part.partition(":")
        test = [c.strip() for c in test_text.split("+") if c.strip()]
        val = [c.strip() for c in val_text.split("+") if c.strip()]
        for case in test + val:
            if case not in REAL_CASES:
                raise UsageError(f"--folds {text!r}: unknown case {case!r}; the real set has {', '.join(REAL_CASES)}")
        if not test:
            raise UsageError(f"--folds {text!r}: fold {fold_number} has no test case")
        repeated = sorted({case for group in (test, val) for case, count in Counter(group).items() if count > 1})
        if repeated:
            raise UsageError(f"--folds {text!r}: fold {fold_number} names {', '.join(repeated)} more than once")
        if tested & set(test):
            raise UsageError(f"--folds {text!r}: {', '.join(sorted(tested & set(test)))} tested in two folds; "
                             f"patient-level folds test each patient once")
        if set(val) & set(test):
            raise UsageError(f"--folds {text!r}: fold {fold_number} validates on a test case")
        tested |= set(test)
        rest = [case for case in REAL_CASES if case not in test and case not in val]
        if not val:
            if len(rest) < 2:
                raise UsageError(f"--folds {text!r}: fold {fold_number} leaves {len(rest)} patient(s) for training and "
                                 f"validation; give its validation case with TEST:VAL, or test fewer patients")
            val, rest = [rest[-1]], rest[:-1]
        if not rest:
            raise UsageError(f"--folds {text!r}: fold {fold_number} leaves no patient to train on")
        folds.append(Fold(f"fold{fold_number}", tuple(test), tuple(val), tuple(rest)))
    if not folds:
        raise UsageError(f"--folds {text!r}: expected at least one fold, e.g. {REAL_FOLDS}")
    return folds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the top of bench/quality.py for the measures and outputs.")
    parser.add_argument("--dataset", default="both", choices=[*DATASETS, "both"], help="default: %(default)s")
    parser.add_argument("--configs", default="default",
                        help=f"comma-separated names of CONFIGS ({', '.join(CONFIGS)}; default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated train.py SEEDs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training budget per fold in epochs of the config's BATCHES_PER_EPOCH batches (default: "
                             f"{DEFAULT_EPOCHS}; --smoke: {SMOKE_EPOCHS})")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help=f"wall-clock cap on training per fold in minutes, 0 = none (default: 0; --smoke: "
                             f"{SMOKE_BUDGET_MINUTES:g})")
    parser.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}; --smoke: {SMOKE_OUT})")
    parser.add_argument("--folds", default=REAL_FOLDS,
                        help="real-set folds: TEST[:VAL] per fold, separated by ';', cases joined by '+' "
                             "(default: %(default)s; validation: the last remaining patient)")
    parser.add_argument("--only-fold", type=int, default=None, metavar="N",
                        help="run fold N (1, 2, ...) of --folds alone, under its own name: several processes can "
                             "train the folds at once into folders under one --out, whose --table-only joins them")
    parser.add_argument("--real-data", default=None,
                        help="the built real set (default: OUT/data/duke_dev, built there when missing)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="extra train.py override for every run (repeatable), e.g. --set EPOCHS=1000")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: synthetic --small, 1-minute budget, " + ", ".join(SMOKE_TRAIN))
    parser.add_argument("--table-only", action="store_true",
                        help="print the tables of every result JSON under --out and exit")
    args = parser.parse_args(argv)
    try:
        args.datasets = list(DATASETS) if args.dataset == "both" else [args.dataset]
        args.config_names = _names(args.configs, tuple(CONFIGS), "configs")
        pretrained = [name for name in args.config_names if pretrain_epochs(name)]
        if pretrained and "synthetic" in args.datasets:
            raise UsageError(f"--configs {','.join(pretrained)}: pretrained on the whole synthetic set, so they "
                             f"cannot be scored on it; use --dataset real")
        args.seed_list = parse_seeds(args.seeds)
        args.fold_list = parse_folds(args.folds)
        if args.only_fold is not None:
            if not 1 <= args.only_fold <= len(args.fold_list):
                raise UsageError(f"--only-fold {args.only_fold}: --folds has folds 1 to {len(args.fold_list)}")
            args.fold_list = [args.fold_list[args.only_fold - 1]]
        for item in args.overrides:
            if not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=.*", item, re.S):
                raise UsageError(f"--set {item!r}: expected NAME=VALUE, e.g. --set BATCH_SIZE=8")
            if item.partition("=")[0].strip() in ("EPOCHS", BUDGET_SETTING):
                raise UsageError(f"--set {item!r}: give the training budget with --epochs and --budget-minutes")
        if args.epochs is None:
            args.epochs = SMOKE_EPOCHS if args.smoke else DEFAULT_EPOCHS
        if args.epochs < 1:
            raise UsageError(f"--epochs {args.epochs}: expected at least 1 epoch")
        if args.budget_minutes is None:
            args.budget_minutes = SMOKE_BUDGET_MINUTES if args.smoke else 0.0
        if not (args.budget_minutes >= 0 and math.isfinite(args.budget_minutes)):
            raise UsageError(f"--budget-minutes {args.budget_minutes:g}: expected minutes >= 0 (0 = no limit)")
    except UsageError as error:
        parser.error(str(error))
    # the defaults lie in the repository's work/, paths given are taken from where the command runs (the scripts
    # themselves run in the repository, so every path handed to them is absolute)
    args.out = Path(args.out).resolve() if args.out else REPO / (SMOKE_OUT if args.smoke else DEFAULT_OUT)
    args.real_data = Path(args.real_data).resolve() if args.real_data else None
    return args


def check_untracked(path: Path, what: str) -> None:
    """Raises UsageError when ``path`` lies in the repository where git could track it (real-scan data)."""
    path = path.resolve()
    if path != REPO and REPO not in path.parents:
        return
    try:  # a file inside, so that folder patterns (/work/) match even before the folder exists
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(path / "probe")],
                                 capture_output=True).returncode == 0
    except OSError:
        ignored = (REPO / "work") in path.parents or path == REPO / "work"
    if not ignored:
        raise UsageError(f"{what} {path} lies in the repository and is not git-ignored; real scans and files made "
                         f"from them must never be tracked: use a folder under work/ or outside the repository")


def machine_description() -> str:
    """What trained: the GPU's name, or the CPU's model, cores and precision ("bf16" where it has native bf16 that
    runs faster than fp32, "fp32, bf16 slower" where its bf16 runs slower, else "fp32 only"), as train.py's runtime
    would choose it with BF16_SPEED_CHECK."""
    import torch  # here: the table-only path needs no torch

    from utils.model.runtime import RuntimeSettings, select_runtime
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    runtime = select_runtime(RuntimeSettings(device="cpu", mixed_precision=True, bf16_speed_check=True))
    precision = "bf16" if runtime.autocast_dtype else "fp32, bf16 slower" if runtime.note else "fp32 only"
    return f"CPU {model}, {os.cpu_count()} cores, {precision}"


# --------------------------------------------------------------------------------------------------------------
# Steps (subprocesses)
# --------------------------------------------------------------------------------------------------------------
def _tail(path: Path, lines: int = 4) -> str:
    try:
        text = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join("    | " + line[-200:] for line in text[-lines:])


def run_step(step: str, command: list[str], log: Path) -> float:
    """Runs ``command`` in the repository with its output in ``log``; returns its wall time in seconds.

    Raises:
        StepFailed: the command exited with a status other than 0.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("$ " + shlex.join(command) + "\n\n")
        handle.flush()
        status = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    seconds = time.perf_counter() - start
    if status != 0:
        raise StepFailed(step, f"{step} exited with status {status} after {seconds:.0f} s", log)
    return seconds


def script(name: str, *arguments: str | Path) -> list[str]:
    return [sys.executable, str(REPO / name), *[str(a) for a in arguments]]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def find_octs(data_root: Path) -> dict[str, Path]:
    """Case name (the folder of its oct.mhd, as the scripts name it) -> oct.mhd, below ``data_root``."""
    return {path.parent.name: path for path in sorted(data_root.rglob("oct.mhd"))}


def make_synthetic(out: Path, small: bool) -> Path:
    root = out / "data" / ("synthetic-small" if small else "synthetic")
    command = [sys.executable, "-m", "utils.synthetic", "--out", str(root)] + (["--small"] if small else [])
    print(f"synthetic set: {root}", flush=True)
    run_step("python -m utils.synthetic", command, out / "data" / f"{root.name}.log")
    return root


def make_real(out: Path, real_data: Path | None) -> Path:
    root = real_data or out / "data" / "duke_dev"
    octs = find_octs(root) if root.is_dir() else {}
    missing = [case for case in REAL_CASES
               if case not in octs or not (octs[case].parent / "reference.mhd").is_file()]
    if missing and real_data is None:
        if not REAL_BUILD_SCRIPT.is_file():
            raise StepFailed("build real set", f"{REAL_BUILD_SCRIPT} not found; build the set elsewhere and pass "
                                               f"--real-data DIR")
        print(f"real set: building {root} with {REAL_BUILD_SCRIPT}", flush=True)
        run_step("build.py", [sys.executable, str(REAL_BUILD_SCRIPT), str(root)], out / "data" / "duke_dev.log")
        octs = find_octs(root)
        missing = [case for case in REAL_CASES if case not in octs]
    if missing:
        raise StepFailed("real set", f"{root}: no oct.mhd + reference.mhd for {', '.join(missing)}")
    print(f"real set: {root}", flush=True)
    return root


def write_split(path: Path, fold: Fold) -> None:
    """The fold's split CSV as prepare_data.py --split-file reads it: columns case, split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(case, split) for split in ("train", "val", "test") for case in getattr(fold, split)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "split"])
        writer.writerows(rows)
    os.replace(tmp, path)


def read_split_csv(path: Path) -> dict[str, list[str]]:
    """Split name -> case names, from a split CSV (columns case and split at least)."""
    cases: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cases.setdefault(row["split"].strip().lower(), []).append(row["case"])
    return cases


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_epoch_log(run_dir: Path) -> dict:
    """Epochs done, best epoch and its validation mean fluid Dice, summed epoch seconds, from train.py's log.csv."""
    try:
        with open(run_dir / RUN_LOG_CSV, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {"epochs_done": None}
    dice = [(_number(row.get("dice_mean_fluid")), int(float(row["epoch"]))) for row in rows]
    defined = [(value, epoch) for value, epoch in dice if value is not None]
    best = max(defined, key=lambda item: (item[0], -item[1])) if defined else (None, None)
    return {"epochs_done": len(rows), "last_epoch": int(float(rows[-1]["epoch"])) if rows else None,
            "best_epoch": best[1], "best_val_dice_mean_fluid": best[0],
            "epoch_seconds_sum": round(sum(_number(row.get("seconds")) or 0.0 for row in rows), 1)}


def read_summary(path: Path) -> list[dict]:
    """evaluate.py's summary.csv as dicts (numbers as floats, empty or NaN as None)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (value if key in ("vendor", "fluid") else _number(value)) for key, value in row.items()}
            for row in rows]


# --------------------------------------------------------------------------------------------------------------
# One run: (dataset, config, seed) over its folds
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    """What the runs of this invocation share."""

    out: Path
    smoke: bool
    epochs: int
    budget_minutes: float
    machine: str
    extra_train: list[str]
    real_folds: list[Fold]
    real_data: Path | None
    only_fold: bool = False
    data_roots: dict[str, Path] = dataclasses.field(default_factory=dict)
    prepared: dict[tuple, Fold] = dataclasses.field(default_factory=dict)

    def train_overrides(self, config: str, seed: int, epochs: int | None = None) -> list[str]:
        """train.py's settings of trained config ``config`` at ``seed``, trained ``epochs`` (None: ``--epochs``)."""
        budget = [f"{BUDGET_SETTING}={self.budget_minutes:g}"] if self.budget_minutes > 0 else []
        return [*CONFIGS[config]["train"], *(SMOKE_TRAIN if self.smoke else []), f"EPOCHS={epochs or self.epochs}",
                *self.extra_train, *budget, f"SEED={seed}"]

    def members(self, config: str, seed: int) -> list[tuple[str, int, int]]:
        """The models ``config`` predicts with at ``seed``: (trained config, seed, epochs) each; one for a plain
        config, several for an ensemble (``ensemble_seeds``, ``ensemble_members``)."""
        if "ensemble_members" in CONFIGS[config]:  # --smoke: every member at the smoke budget
            return [(name, member_seed, self.epochs if self.smoke or not epochs else epochs)
                    for name, member_seed, epochs in CONFIGS[config]["ensemble_members"]]
        return [(trained_as(config), member_seed, self.epochs)
                for member_seed in CONFIGS[config].get("ensemble_seeds", (seed,))]

    def epochs_of(self, config: str) -> int:
        """The epochs ``config``'s result depends on: ``--epochs``; for an ensemble whose members all fix their own
        (outside ``--smoke``), the standard budget, so that its name and identity do not follow ``--epochs``."""
        fixed = [epochs for _, _, epochs in CONFIGS[config].get("ensemble_members", ())]
        return DEFAULT_EPOCHS if fixed and all(fixed) and not self.smoke else self.epochs

    def identity(self, dataset: str, config: str, seed: int) -> dict:
        """What a run's result depends on: a result JSON made otherwise is not reused."""
        return {"version": RESULT_VERSION, "dataset": dataset, "config": config, "seed": seed, "smoke": self.smoke,
                "epochs": self.epochs_of(config), "budget_minutes": self.budget_minutes,
                "prepare_overrides": CONFIGS[config].get("prepare", []),
                **({"pretrain_epochs": pretrained} if (pretrained := pretrain_epochs(config)) else {}),
                **({"snapshots": CONFIGS[config]["snapshots"]} if CONFIGS[config].get("snapshots") else {}),
                "ensemble_seeds": list(CONFIGS[config].get("ensemble_seeds", [])),
                **({"ensemble_members": [[*member, self.train_overrides(*member)]
                                         for member in self.members(config, seed)]}
                   if "ensemble_members" in CONFIGS[config] else {}),
                "train_overrides": self.train_overrides(trained_as(config), seed, self.epochs_of(config)),
                "predict_overrides": CONFIGS[config]["predict"], "columns": list(COLUMNS),
                "folds": [fold.as_dict() for fold in self.folds_of(config)] if dataset == "real" else SYNTHETIC_FOLD}

    def folds_of(self, config: str) -> list[Fold]:
        """The real set's folds as ``config`` trains them (``no_validation``: validation patients train too)."""
        if CONFIGS[trained_as(config)].get("no_validation"):
            return [fold.without_validation() for fold in self.real_folds]
        return self.real_folds

    def run_name(self, config: str) -> str:
        """``config`` with this plan's budget when that is not the standard one (see :func:`run_name`)."""
        return run_name(config, self.epochs_of(config), self.budget_minutes, self.smoke)

    def result_path(self, dataset: str, config: str, seed: int) -> Path:
        """The result JSON; a run of some folds only (``--only-fold``) names them, so several such runs can share
        an ``--out``."""
        folds = "".join(f"-{fold.name}" for fold in self.real_folds) if self.only_fold and dataset == "real" else ""
        return self.out / "results" / f"{dataset}-{self.run_name(config)}-seed{seed}{folds}.json"


def pretrain_epochs(config: str) -> dict[str, int]:
    """The synthetic pretraining epochs of each trained config ``config`` predicts with that has one ("pretrain")."""
    members = ([name for name, _, _ in CONFIGS[config]["ensemble_members"]] if "ensemble_members" in CONFIGS[config]
               else [trained_as(config)])
    return {name: CONFIGS[name]["pretrain"] for name in members if CONFIGS[name].get("pretrain")}


def trained_as(config: str) -> str:
    """The config whose training ``config`` uses: its own, its ``train_as``, or its first ensemble member's."""
    if "ensemble_members" in CONFIGS[config]:
        return CONFIGS[config]["ensemble_members"][0][0]
    return CONFIGS[config].get("train_as", config)


def run_name(config: str, epochs: int, budget_minutes: float, smoke: bool) -> str:
    """A run's name in paths and tables: ``config``, with ``-<epochs>ep`` at other than the standard epochs and
    ``-<minutes>min`` under a wall-clock cap other than the standard one (none; 1 minute with ``smoke``)."""
    name = config if epochs == (SMOKE_EPOCHS if smoke else DEFAULT_EPOCHS) else f"{config}-{epochs}ep"
    if budget_minutes != (SMOKE_BUDGET_MINUTES if smoke else 0.0):
        name += f"-{budget_minutes:g}min" if budget_minutes > 0 else "-nocap"
    return name


def prepare_fold(plan: Plan, dataset: str, config: str, fold: Fold) -> tuple[Path, Path, Fold]:
    """prepare_data.py for one fold (once per invocation); returns (work dir, split CSV, fold with its cases)."""
    prepare = CONFIGS[config].get("prepare", [])
    variant = "_noval" if dataset == "real" and not fold.val else ""  # a no_validation config's split
    key = (dataset, config if prepare else "", fold.name + variant)
    base = plan.out / dataset / "prepared" / (config if prepare else "")
    work_dir = base / (fold.name + variant)
    if dataset == "real":
        split_file = plan.out / dataset / "splits" / f"{fold.name}{variant}.csv"
        write_split(split_file, fold)
        arguments = ["--split-file", split_file]
    else:
        split_file = work_dir / "split.csv"  # made by prepare_data.py from SPLIT_FRACTIONS, SPLIT_SEED
        arguments = []
    if key not in plan.prepared:
        label = f"[{dataset}{' ' + config if prepare else ''} {fold.name}]"
        print(f"{label} prepare_data.py ...", flush=True)
        seconds = run_step("prepare_data.py", script("prepare_data.py", "--data-root", plan.data_roots[dataset],
                                                     "--work-dir", work_dir, *arguments, *_sets(prepare)),
                           base / f"{fold.name}{variant}.prepare.log")
        print(f"{label} prepared in {seconds:.0f} s", flush=True)
        if dataset == "synthetic":
            cases = read_split_csv(split_file)
            fold = Fold(fold.name, *(tuple(sorted(cases[split])) for split in ("test", "val", "train")))
        plan.prepared[key] = fold
    return work_dir, split_file, plan.prepared[key]


def _training_key(arguments: list[str]) -> list[str]:
    """What makes two trainings the same: train.py's arguments (``[script path, *arguments]``, the Python left out)
    with the script's folder left out, so a run made from another checkout of the repository (another path to
    train.py) is reused, not deleted and trained again."""
    return [Path(arguments[0]).name, *arguments[1:]] if arguments else []


def train_fold(command: list[str], fold_dir: Path, run_dir: Path, label: str, starts_from: str = "") -> dict:
    """train.py, or its finished run reused when trained with the same command (and, for a run started from other
    weights, the same ``starts_from``: their digest); returns time and epochs."""
    marker = fold_dir / TRAIN_MARKER
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        done = None
    if (done and _training_key(done.get("command") or []) == _training_key(command[1:])
            and done.get("starts_from", "") == starts_from and (run_dir / "best.pt").is_file()):
        print(f"{label} train.py: done before ({done['wall_seconds'] / 60:.1f} min), reused", flush=True)
        return {"wall_seconds": done["wall_seconds"], "reused": True, **read_epoch_log(run_dir)}
    marker.unlink(missing_ok=True)
    if run_dir.exists():  # an unfinished or other run: start afresh (train.py would append to its log.csv)
        shutil.rmtree(run_dir)
    print(f"{label} train.py ...", flush=True)
    seconds = run_step("train.py", command, fold_dir / "train.log")
    if not (run_dir / "best.pt").is_file():
        raise StepFailed("train.py", f"train.py left no {run_dir / 'best.pt'}", fold_dir / "train.log")
    record = {"command": command[1:], "wall_seconds": round(seconds, 1), **({"starts_from": starts_from}
                                                                            if starts_from else {})}
    marker.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    epochs = read_epoch_log(run_dir)
    print(f"{label} trained in {seconds / 60:.1f} min, {epochs['epochs_done']} epoch(s)", flush=True)
    return {"wall_seconds": round(seconds, 1), "reused": False, **epochs}


PRETRAIN_SPLIT = "SPLIT_FRACTIONS={'train': 1.0, 'val': 0.0, 'test': 0.0}"  # pretraining: every synthetic case


def pretrained_checkpoint(plan: Plan, config: str, seed: int) -> Path:
    """The weights a ``pretrain`` config's real-set folds start from: ``config`` trained at ``seed`` on the whole
    synthetic set for its ``pretrain`` epochs (the set made, prepared and trained once per invocation; finished
    training reused as in :func:`train_fold`). Returns its best.pt."""
    epochs = SMOKE_EPOCHS if plan.smoke else CONFIGS[config]["pretrain"]
    if "synthetic" not in plan.data_roots:
        plan.data_roots["synthetic"] = make_synthetic(plan.out, plan.smoke)
    prepare = CONFIGS[config].get("prepare", [])  # prepared as the config's real folds are
    work_dir = plan.out / "synthetic" / "prepared" / ("pretrain" + (f"-{config}" if prepare else ""))
    if ("synthetic", "pretrain", work_dir.name) not in plan.prepared:
        seconds = run_step("prepare_data.py", script("prepare_data.py", "--data-root", plan.data_roots["synthetic"],
                                                     "--work-dir", work_dir, *_sets([*prepare, PRETRAIN_SPLIT])),
                           work_dir.parent / f"{work_dir.name}.prepare.log")
        print(f"[synthetic pretrain] prepared in {seconds:.0f} s", flush=True)
        plan.prepared[("synthetic", "pretrain", work_dir.name)] = Fold("pretrain")
    train_dir = plan.out / "synthetic" / f"pretrain-{run_name(config, epochs, plan.budget_minutes, plan.smoke)}" \
        / f"seed{seed}"
    command = script("train.py", "--work-dir", work_dir, "--run-dir", train_dir / "run",
                     *_sets(plan.train_overrides(config, seed, epochs)))
    train_fold(command, train_dir, train_dir / "run", f"[synthetic pretrain {config} seed {seed}]")
    return train_dir / "run" / "best.pt"


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex): which weights a run started from, so that retrained ones are noticed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fold(plan: Plan, dataset: str, config: str, seed: int, fold: Fold) -> dict:
    """Prepare, train, predict, evaluate and score one fold of one run."""
    label = f"[{dataset} {plan.run_name(config)} seed {seed} {fold.name}]"
    data_root = plan.data_roots[dataset]
    work_dir, split_file, fold = prepare_fold(plan, dataset, config, fold)
    if not fold.test:
        raise StepFailed("split", f"{split_file}: no test case")
    fold_dir = plan.out / dataset / plan.run_name(config) / f"seed{seed}" / fold.name
    # predict-only variants reuse their config's training; an ensemble predicts with the models of several seeds or
    # configs (each trained, or reused, as its own run)
    run_dirs, commands, trainings = [], {}, []
    for member, member_seed, epochs in plan.members(config, seed):
        member_run = run_name(member, epochs, plan.budget_minutes, plan.smoke)
        train_dir = plan.out / dataset / member_run / f"seed{member_seed}" / fold.name
        run_dirs.append(train_dir / "run")
        command = script("train.py", "--work-dir", work_dir, "--run-dir", run_dirs[-1],
                         *_sets(plan.train_overrides(member, member_seed, epochs)))
        starts_from = ""
        if CONFIGS[member].get("pretrain"):
            checkpoint = pretrained_checkpoint(plan, member, member_seed)
            command += ["--init-from", str(checkpoint)]
            starts_from = file_digest(checkpoint)
        key = (f"train_seed{member_seed}" if member_run == plan.run_name(trained_as(config))
               else f"train_{member_run}_seed{member_seed}")
        commands["train" if key == f"train_seed{seed}" else key] = command
        trainings.append(train_fold(command, train_dir, run_dirs[-1], label, starts_from))
    # an ensemble's training time and epochs: its members' summed
    training = trainings[0] if len(trainings) == 1 else {
        "wall_seconds": round(sum(t["wall_seconds"] for t in trainings), 1), "reused": True,
        "epochs_done": sum(t["epochs_done"] or 0 for t in trainings), "members": trainings}
    pred_dir = fold_dir / "pred"

    octs = find_octs(data_root)
    missing = [case for case in fold.test if case not in octs]
    if missing:
        raise StepFailed("predict.py", f"no oct.mhd under {data_root} for test case(s) {', '.join(missing)}")
    snapshots = CONFIGS[config].get("snapshots", 0)  # a snapshot ensemble: each run's cycle-end weights
    checkpoints = [run_dir / (f"snapshot{cycle}.pt" if snapshots else "best.pt")  # config.py's SNAPSHOT_CHECKPOINT
                   for run_dir in run_dirs for cycle in range(1, max(snapshots, 1) + 1)]
    commands["predict"] = script("predict.py", "--checkpoint", *checkpoints,
                                 "--out", pred_dir,
                                 *_sets(CONFIGS[config]["predict"]), *[octs[case] for case in fold.test])
    seconds = run_step("predict.py", commands["predict"], fold_dir / "predict.log")
    print(f"{label} predicted {len(fold.test)} case(s) in {seconds:.0f} s", flush=True)
    commands["evaluate"] = script("evaluate.py", "--pred", pred_dir, "--data-root", data_root, "--split-file",
                                  split_file, "--split", "test", "--out", pred_dir / "evaluation")
    run_step("evaluate.py", commands["evaluate"], fold_dir / "evaluate.log")
    try:
        summary = read_summary(pred_dir / "evaluation" / "summary.csv")
    except (OSError, KeyError) as error:
        raise StepFailed("evaluate.py", f"cannot read {pred_dir / 'evaluation' / 'summary.csv'} ({error})",
                         fold_dir / "evaluate.log") from None

    cases = {}
    for case in fold.test:
        try:
            cases[case] = case_measures(pred_dir / case / "segmentation.mhd",
                                        octs[case].parent / "reference.mhd", COLUMNS)
        except MeasureError as error:
            raise StepFailed("measures", str(error)) from None
    pooled = pooled_measures(list(cases.values()))
    print(f"{label} Dice {format_number(pooled['dice_pooled'], 3)} (columns {COLUMNS[0]}-{COLUMNS[1] - 1}: "
          f"{format_number(pooled['dice_pooled_cols'], 3)})", flush=True)
    return {"cases_by_split": fold.as_dict(), "work_dir": str(work_dir), "split_file": str(split_file),
            "run_dir": " ".join(map(str, run_dirs)), "pred_dir": str(pred_dir),
            "commands": {step: shlex.join(command) for step, command in commands.items()},
            "train": training, "cases": cases, **pooled, "evaluate_summary": summary}


def pooled_over_folds(folds: list[dict]) -> dict:
    """The measures over every test case of ``folds`` (:func:`run_fold` results) and their training minutes."""
    minutes = [fold["train"]["wall_seconds"] / 60 for fold in folds]
    return {**pooled_measures([case for fold in folds for case in fold["cases"].values()]),
            "train_minutes_total": sum(minutes), "train_minutes_per_fold_mean": sum(minutes) / len(minutes)}


def run_one(plan: Plan, dataset: str, config: str, seed: int) -> dict:
    """All folds of one (dataset, config, seed); writes and returns its result."""
    started = datetime.datetime.now().isoformat(timespec="seconds")
    folds = plan.folds_of(config) if dataset == "real" else [Fold(SYNTHETIC_FOLD)]
    results = {}
    for fold in folds:
        try:
            results[fold.name] = run_fold(plan, dataset, config, seed, fold)
        except StepFailed as error:
            raise StepFailed(error.step, f"{fold.name}: {error}", error.log) from None
    result = {**plan.identity(dataset, config, seed), "identity": plan.identity(dataset, config, seed),
              "common_train_overrides": [*(SMOKE_TRAIN if plan.smoke else []), *plan.extra_train],
              "data_root": str(plan.data_roots[dataset]), "machine": plan.machine, "started": started,
              "finished": datetime.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "folds": results, "pooled": pooled_over_folds(list(results.values()))}
    path = plan.result_path(dataset, config, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return result


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
def _summary_value(result: dict, fluid: str, key: str) -> float | None:
    """Mean over folds of evaluate.py's summary value (all vendors) for one fluid."""
    values = [row[key] for fold in result["folds"].values() for row in fold.get("evaluate_summary", [])
              if row.get("vendor") == "all" and row.get("fluid") == fluid and row.get(key) is not None]
    return sum(values) / len(values) if values else None


def row_values(result: dict, fold_names: list[str]) -> list[tuple[str, float | None, int]]:
    """(column, value, digits) of one run's table row."""
    pooled = result["pooled"]
    values = [(f"Dice {name}", result["folds"][name]["dice_pooled"] if name in result["folds"] else None, 3)
              for name in fold_names]
    epochs = [fold["train"].get("epochs_done") for fold in result["folds"].values()]
    values += [("pooled Dice", pooled["dice_pooled"], 3),
               (f"pooled Dice x {COLUMNS[0]}-{COLUMNS[1] - 1}", pooled["dice_pooled_cols"], 3),
               ("per-patient Dice mean", pooled["dice_per_patient_mean"], 3),
               ("mean abs vol diff mm³", pooled["abs_volume_diff_mean_mm3"], 4),
               ("area ratio P/G", pooled["area_ratio"], 2),
               ("train min/fold", pooled["train_minutes_per_fold_mean"], 1),
               ("epochs/fold", sum(epochs) / len(epochs) if None not in epochs and epochs else None, 1)]
    if result["dataset"] == "synthetic":
        for key, short in (("dice_mean_with_fluid", "Dice w/ fluid"), ("auc", "AUC")):
            values += [(f"eval {fluid} {short}", _summary_value(result, fluid, key), 3)
                       for fluid in ("IRF", "SRF", "PED")]
    return values


def tables(results: list[dict]) -> str:
    """Markdown: per dataset, one row per run name (:func:`run_name`) and seed, then mean (max - min) over seeds."""
    parts = []
    for dataset in DATASETS:
        runs = sorted((r for r in results if r["dataset"] == dataset),
                      key=lambda r: (list(CONFIGS).index(r["config"]) if r["config"] in CONFIGS else len(CONFIGS),
                                     r["config"], r["epochs"], r["budget_minutes"], r["seed"]))
        names = [run_name(r["config"], r["epochs"], r["budget_minutes"], r.get("smoke", False)) for r in runs]
        if not runs:
            continue
        fold_names = list(dict.fromkeys(name for r in runs for name in r["folds"]))
        budgets = sorted({(r["epochs"], r["budget_minutes"]) for r in runs})
        budget_text = ", ".join(f"{epochs} epochs" + (f" (at most {minutes:g} min)" if minutes > 0 else "")
                                for epochs, minutes in budgets)
        machines = sorted({r.get("machine", "?") for r in runs})
        smoke = " (smoke run)" if any(r.get("smoke") for r in runs) else ""
        fold_text = "; ".join(
            f"{name}: test {'+'.join(fold['cases_by_split']['test'])}, val {'+'.join(fold['cases_by_split']['val'])}"
            for name, fold in runs[0]["folds"].items())
        extra = sorted({" ".join(r.get("common_train_overrides", [])) for r in runs})
        parts.append(f"### {dataset}{smoke}\n\ntraining budget per fold: {budget_text} (of each config's "
                     f"BATCHES_PER_EPOCH batches); trained on: {' / '.join(machines)}; folds: {fold_text}"
                     + (f"; train.py overrides for every config: {' / '.join(e or '-' for e in extra)}"
                        if any(extra) else ""))
        header = ["config", "seed"] + [name for name, _, _ in row_values(runs[0], fold_names)]
        parts.append(markdown_table(header, [[name, str(r["seed"])]
                                             + [format_number(v, d) for _, v, d in row_values(r, fold_names)]
                                             for name, r in zip(names, runs)]))
        rows = []
        for name in dict.fromkeys(names):
            group = [row_values(r, fold_names) for other, r in zip(names, runs) if other == name]
            cells = []
            for column in range(len(group[0])):
                values = [g[column][1] for g in group if g[column][1] is not None]
                digits = group[0][column][2]
                cells.append("-" if not values else f"{format_number(sum(values) / len(values), digits)} "
                             f"({format_number(max(values) - min(values), digits)})")
            rows.append([name, str(len(group))] + cells)
        parts.append("mean (max - min) over seeds:\n\n" + markdown_table(["config", "seeds"] + header[2:], rows))
        patients = sorted({case for r in runs for fold in r["folds"].values() for case in fold.get("cases", {})})
        if patients:
            dice = [[name, str(r["seed"])] + [format_number(next((fold["cases"][case]["dice"]
                                                                  for fold in r["folds"].values()
                                                                  if case in fold.get("cases", {})), None), 3)
                                              for case in patients] for name, r in zip(names, runs)]
            parts.append("Dice per patient (case):\n\n" + markdown_table(["config", "seed", *patients], dice))
    return "\n\n".join(parts)


def join_fold_results(results: list[dict]) -> list[dict]:
    """Results of one run (dataset, run name, seed) made fold by fold (``--only-fold``) joined into one: their
    folds together, the pooled measures over all their cases. Results whose folds overlap stay apart."""
    joined: dict[tuple, dict] = {}
    out = []
    for result in results:
        key = (result["dataset"], run_name(result["config"], result.get("epochs", DEFAULT_EPOCHS),
                                           result["budget_minutes"], result.get("smoke", False)), result["seed"])
        first = joined.get(key)
        if first is None or set(first["folds"]) & set(result["folds"]):
            joined.setdefault(key, result)
            out.append(result)
            continue
        merged = {**first, "folds": {**first["folds"], **result["folds"]}}
        merged["pooled"] = pooled_over_folds(list(merged["folds"].values()))
        out[out.index(first)] = merged
        joined[key] = merged
    return out


def load_results(out: Path) -> tuple[list[dict], list[str]]:
    """Every result JSON under ``out`` (at any depth), those of one run made fold by fold joined
    (:func:`join_fold_results`); and one line per file that cannot be read."""
    results, errors = [], []
    for path in sorted(out.rglob("results/*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            if not {"dataset", "config", "seed", "folds", "pooled"} <= set(result):
                raise ValueError("not a bench/quality.py result")
            if result.get("version") != RESULT_VERSION:
                raise ValueError(f"made by an older bench/quality.py (result version {result.get('version')}, "
                                 f"budget in minutes); this one tables version {RESULT_VERSION}")
            results.append(result)
        except (OSError, ValueError) as error:
            errors.append(f"{path}: cannot be read ({error})")
    return join_fold_results(results), errors


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_only:
        results, errors = load_results(args.out)
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        if not results:
            print(f"error: no result JSON under {args.out / 'results'}; run bench/quality.py first",
                  file=sys.stderr)
            return 1
        print(tables(results))
        return 1 if errors else 0

    try:
        if "real" in args.datasets:
            check_untracked(args.out, "--out")
            if args.real_data:
                check_untracked(args.real_data, "--real-data")
        plan = Plan(args.out, args.smoke, args.epochs, args.budget_minutes, machine_description(),
                    extra_train=args.overrides, real_folds=args.fold_list, real_data=args.real_data,
                    only_fold=args.only_fold is not None)
        runs = [(d, c, s) for d in args.datasets for c in args.config_names for s in args.seed_list]
        conflicts = []
        for run in runs:
            path = plan.result_path(*run)
            if path.is_file():
                wanted = json.loads(json.dumps(plan.identity(*run)))
                try:
                    saved = json.loads(path.read_text(encoding="utf-8")).get("identity") or {}
                except (OSError, ValueError):
                    saved = {}
                differ = [key for key in wanted if saved.get(key) != wanted[key]]
                if differ:
                    conflicts.append(f"{path} (other {', '.join(differ)})")
        if conflicts:
            raise UsageError(f"{len(conflicts)} result(s) made with other settings exist: {'; '.join(conflicts)}; "
                             f"delete them or choose another --out")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, failures = [], []
    try:
        for dataset in args.datasets:
            todo = [(c, s) for d, c, s in runs if d == dataset]
            pending = [(c, s) for c, s in todo if not plan.result_path(dataset, c, s).is_file()]
            for config, seed in todo:
                if (config, seed) not in pending:
                    print(f"[{dataset} {plan.run_name(config)} seed {seed}] done before: "
                          f"{plan.result_path(dataset, config, seed)}")
                    results.append(json.loads(plan.result_path(dataset, config, seed).read_text(encoding="utf-8")))
            if not pending:
                continue
            try:
                plan.data_roots[dataset] = (make_synthetic(plan.out, plan.smoke) if dataset == "synthetic"
                                            else make_real(plan.out, plan.real_data))
            except StepFailed as error:
                failures += [(f"{dataset} {plan.run_name(c)} seed {s}", error) for c, s in pending]
                continue
            for config, seed in pending:
                try:
                    results.append(run_one(plan, dataset, config, seed))
                except StepFailed as error:
                    failures.append((f"{dataset} {plan.run_name(config)} seed {seed}", error))
                    print(f"[{dataset} {plan.run_name(config)} seed {seed}] FAILED at {error.step}: {error}",
                          file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue (finished steps are reused)", file=sys.stderr)
        return 1

    if results:
        print("\n" + tables(results))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for name, error in failures:
            print(f"error: {name}: {error.step}: {error}" + (f"; log: {error.log}" if error.log else ""),
                  file=sys.stderr)
            if error.log:
                print(_tail(error.log), file=sys.stderr)
        return 1
    print(f"\nresults in {plan.out / 'results'}; tables again: python bench/quality.py --table-only --out {plan.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
