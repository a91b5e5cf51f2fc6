"""Every setting of the retouch pipeline, in one place.

Edit the constants below, or override any of them for one run with ``--set NAME=VALUE`` on any script, e.g.
``python train.py --set EPOCHS=20 --set ENCODER=resnet18``. Each script saves the settings it actually used as
``config.json`` beside its outputs (and inside every checkpoint), so a run can be reproduced.

Conventions: arrays are ``(z, y, x)`` = (B-scan, depth, width); SimpleITK spacing is ``(x, y, z)`` in mm.
"""

# --------------------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------------------
DATA_ROOT = "data"  # RETOUCH download (read only): every oct.mhd below it, at any depth, is a case
WORK_DIR = "work"  # everything the pipeline writes: prepared slices, CSVs, runs, predictions
SYNTHETIC_ROOT = "work/synthetic_retouch"  # where `make demo` writes synthetic data when DATA_ROOT is empty
SYNTHETIC_CASES_PER_VENDOR = 6  # size of the synthetic set (python -m utils.synthetic, make demo)
SLICES_SUBDIR = "slices"  # WORK_DIR/<this>/<case>/{oct,reference,roi}/<case>_<zzz>.png, 8-bit PNGs
SLICE_IMAGE_FOLDER = "oct"  # preprocessed B-scans, 0..255
SLICE_MASK_FOLDER = "reference"  # label codes 0..3 (cases with a reference.mhd only)
SLICE_ROI_FOLDER = "roi"  # ROI masks, 0 outside / 255 inside
HISTOGRAM_REFERENCE_JSON = "histogram_reference.json"  # WORK_DIR/<this>: the Spectralis histogram used
SLICE_INDEX_CSV = "slice_index.csv"  # WORK_DIR/<this>: one row per B-scan of every case
SPLIT_CSV = "split.csv"  # WORK_DIR/<this>: one row per case with its split (train / val / test)
SPLIT_SLICES_CSV = "slices_{split}.csv"  # WORK_DIR/<this>: the slice index rows of one split
RUNS_SUBDIR = "runs"  # WORK_DIR/<this>/<run name>/: training runs
BEST_CHECKPOINT = "best.pt"  # run folder: the best epoch by BEST_BY, the last without val cases (predict.py's default)
LAST_CHECKPOINT = "last.pt"  # run folder: the checkpoint of the last epoch (train.py --resume)
CONFIG_JSON = "config.json"  # beside every script's outputs: the effective settings
PREDICTIONS_SUBDIR = "predictions"  # WORK_DIR/<this>/<run name>/: predict.py's default output folder
# predictions: OUT/<case>/<this> (+ .raw), read by evaluate.py; predict.py --format mha|nii.gz writes the same name
# with that suffix (segmentation.nii.gz), and evaluate.py finds it under any of them
SEGMENTATION_FILE = "segmentation.mhd"
PROBABILITY_FILE = "probability_{fluid}.mhd"  # predict.py --save-probabilities: OUT/<case>/<this>, suffix as above
VOLUMES_CSV = "volumes.csv"  # predictions: OUT/<this>, fluid volumes and presence scores, read by evaluate.py
ITKSNAP_LABELS_FILE = "labels_itksnap.txt"  # predictions: OUT/<this>, label names and colours for ITK-SNAP
SLICER_COLOURS_FILE = "labels_slicer.ctbl"  # predictions: OUT/<this>, the same as a 3D Slicer colour table
REPORT_PNG = "report.png"  # predict.py --report: OUT/<case>/<this>, the case's one-page report
REPORT_HTML = "report.html"  # predict.py --report: OUT/<this>, an index of the cases' reports (opens from disk)

# --------------------------------------------------------------------------------------------------------------
# Labels and vendors (the RETOUCH reference.mhd codes)
# --------------------------------------------------------------------------------------------------------------
BACKGROUND = 0
IRF = 1  # intraretinal fluid
SRF = 2  # subretinal fluid
PED = 3  # pigment epithelial detachment
N_CLASSES = 4
IGNORE_LABEL = 255  # training targets only (BLANK_COLUMNS_IGNORED): a pixel left out of the loss and the metrics
FLUIDS = {"IRF": IRF, "SRF": SRF, "PED": PED}
VENDORS = ("Cirrus", "Spectralis", "Topcon")

# --------------------------------------------------------------------------------------------------------------
# Preprocessing (prepare_data.py preprocess)
# --------------------------------------------------------------------------------------------------------------
# Spectralis oct.mhd (relative to DATA_ROOT, or absolute) whose histogram Cirrus and Topcon volumes are matched
# to. Empty: the first Spectralis oct.mhd case by path (without any, the first Cirrus or Topcon one); the one used is
# recorded in WORK_DIR/prepare_config.json and, with its histogram, in HISTOGRAM_REFERENCE_JSON and every checkpoint.
HISTOGRAM_REFERENCE = ""
HISTOGRAM_MATCH_VENDORS = ("Cirrus", "Topcon")
HISTOGRAM_ROUNDING = "truncate"  # matched intensities cut to integers ("truncate", the original) or "round"
# Vendors whose B-scans are median filtered (noisier than Spectralis). The original's if/if/else skips the
# cross-B-scan median on Cirrus; we apply it to both (MEDIAN_SLICES_VENDORS = ("Topcon",) is the original).
MEDIAN_VENDORS = ("Cirrus", "Topcon")
MEDIAN_SLICES_VENDORS = ("Cirrus", "Topcon")
MEDIAN_SLICES = 3  # median over each B-scan and its neighbours (odd; 1 = off; the original: 3)
MEDIAN_INPLANE = 3  # then an in-plane median of this size (odd; 1 = off; the original: 3)
PNG_COMPRESS_LEVEL = 1  # 0-9: slice PNGs are lossless whatever the level; 1 is fast and about 2x smaller than 0

# --------------------------------------------------------------------------------------------------------------
# Split (prepare_data.py split): by case, stratified by vendor
# --------------------------------------------------------------------------------------------------------------
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
# True: each vendor split in those shares. The original (train_model.py: SplitRandom(ratio=0.75) by case) draws
# among all cases, 75 % train and 25 % validation, no test: SPLIT_BY_VENDOR=False with
# SPLIT_FRACTIONS={'train': 0.75, 'val': 0.25, 'test': 0.0}
SPLIT_BY_VENDOR = True
SPLIT_SEED = 3  # with 3 (as with most seeds) the val and test cases of the default synthetic set hold every fluid
# A user's split (an edited split.csv, or prepare_data.py --split-file) that leaves out a prepared case is an error,
# unless this is True (prepare_data.py --allow-unlisted): then such cases are left out of every split.
SPLIT_ALLOW_UNLISTED = False

# --------------------------------------------------------------------------------------------------------------
# ROI masks (prepare_data.py roi): entropy threshold + closing + column fill
# --------------------------------------------------------------------------------------------------------------
ENTROPY_DISK_RADIUS = 15  # pixels: the local-entropy disk (the original's disk(15))
ENTROPY_THRESHOLD = 1e-2  # ROI where entropy / max(entropy) of the B-scan exceeds this (the original's 1e-2)
CLOSING_DISK_RADIUS = 55  # pixels: the binary closing's disk (the original's disk(55))

# --------------------------------------------------------------------------------------------------------------
# Patches (train.py)
# --------------------------------------------------------------------------------------------------------------
PATCH_SHAPE = (256, 128)  # (height, width) in pixels at Spectralis depth resolution (the original: 256 x 128)
SPECTRALIS_AXIAL_SPACING_MM = 0.0039  # depth covered by one patch row: patches span the same mm on every vendor
# How a volume's patch crop height is found: "height_table" (the original's factor per B-scan height: Cirrus 1024
# rows x2, Spectralis 496 x1, Topcon 650 and 885 rows 0.004 / 0.0035 and 0.004 / 0.0026; other heights by the
# header spacing) or "spacing" (PATCH_SHAPE[0] x SPECTRALIS_AXIAL_SPACING_MM / the header's axial spacing, any device)
DEPTH_SCALE = "height_table"
PATCHES_PER_BSCAN = 12  # ROI-centred patches sampled from each B-scan (the original's 12)
RANDOM_PATCH_SHARE = 0.2  # plus int(this x PATCHES_PER_BSCAN) patches centred anywhere in the ROI (original: 2)
# How ROI-centred patch centres are placed. "rmit" (the original's sample_oct_patch_centers): columns drawn from
# every 10th column where a patch fits (2 x PATCHES_PER_BSCAN candidates, the first PATCHES_PER_BSCAN with ROI
# kept), row = middle of that column's ROI +- up to PATCH_JITTER_PX pixels of the B-scan. "stratified": columns
# stratified across the ROI width, row jitter up to PATCH_JITTER x the patch height (kept inside the ROI band).
PATCH_CENTRES = "rmit"
PATCH_JITTER_PX = 10  # "rmit" centres: row offset from the band middle, in the B-scan's own pixels
PATCH_JITTER = 0.1  # "stratified" centres: row offset as a share of the patch height
# How image crops are resized to PATCH_SHAPE (and B-scans to the training depth at test time): "linear"
# (anti-aliased; halving a Cirrus B-scan's depth by nearest neighbour drops every other row) or "nearest" (the
# original's skimage resize with order=0). Masks are always resized nearest neighbour.
IMAGE_RESAMPLING = "linear"
# The network's three input channels: "neighbours" (the original: B-scans z-1, z, z+1, the edge B-scan repeated at
# either end) or "repeat" (B-scan z in all three: for scans whose B-scans lie far apart, where a neighbour shows
# other anatomy). Belongs to the trained model: predict.py takes it from the checkpoint.
INPUT_CHANNELS = "neighbours"
PATCH_BORDER = 42  # pixels ignored on each side of a patch when flagging its fluids (the original: 42)

# --------------------------------------------------------------------------------------------------------------
# Training (train.py)
# --------------------------------------------------------------------------------------------------------------
# "rmit_unet": the authors' U-Net (unpadded convolutions, multi-scale output; a 256x128 patch gives a 164x36 map,
# targets are centre-cropped to it). "smp_unet": a segmentation_models_pytorch U-Net with ENCODER (padded, the
# output as large as the input); random initialisation, nothing is downloaded at run time.
MODEL = "rmit_unet"
RELU_BEFORE_SOFTMAX = True  # rmit_unet: the original's ReLU on the logits before the softmax
# rmit_unet's batch norms: PyTorch momentum of their running statistics, in (0, 1]; 0.01 is the original's Keras
# momentum 0.99 (PyTorch's default is 0.1). For short CPU budgets see BN_REESTIMATE_BATCHES.
BN_MOMENTUM = 0.01
L2_WEIGHT = 1e-4  # rmit_unet: L2 penalty on conv kernels added to the loss (Keras kernel_regularizer l2(1e-4))
ENCODER = "resnet18"  # smp_unet only: an encoder name segmentation_models_pytorch knows (rmit_unet has none)
# Beyond the method: smp_unet's decoder widths, five channel counts from the deepest decoder block to the last
# (smp's default (256, 128, 64, 32, 16); narrower decoders train faster)
DECODER_CHANNELS = (256, 128, 64, 32, 16)
# Beyond the method (smp_unet only): "scse" adds concurrent spatial and channel squeeze-and-excitation (Roy et al.,
# MICCAI 2018) to each decoder block (smp's decoder_attention_type), reweighting the merged skip features per pixel
# and per channel; "" leaves smp's plain decoder
DECODER_ATTENTION = ""
# Beyond the method (smp_unet only): deep supervision, nnU-Net's: 1x1 heads on the decoder's outputs at 1/2, 1/4 and
# 1/8 of the patch, each trained with LOSS on the targets at its size, weighted 1/2, 1/4, 1/8 against the full
# output's 1 (normalised); inference uses the full output alone
DEEP_SUPERVISION = False
# Beyond the method (smp_unet only): the normalisation of its encoder and decoder. "batch" is smp's (batch norms,
# their running statistics at inference: those of the 2-3 training patients of a real fold); "instance" puts an
# instance norm (per image and channel, with a learnt scale and shift) in place of each, nnU-Net's choice: a scan's
# features are normalised by its own statistics in training and at inference alike
NORMALIZATION = "batch"
# Beyond the method (smp_unet only): N > 0 gives smp's last decoder block a skip from the input at full resolution,
# N channels from two 3x3 convolutions (utils/model/full_resolution.py): smp's ResNet encoders start at half
# resolution, so its finest decoder block otherwise only upsamples; the authors' and nnU-Net's U-Nets have a full-
# resolution level. 0: smp's decoder. Not with DEEP_SUPERVISION
FULL_RESOLUTION_CHANNELS = 0
EPOCHS = 100  # the original's 100
BATCHES_PER_EPOCH = 0  # 0: one pass over the stratified, augmented training stream (the original); N: N batches
TRAIN_BUDGET_MINUTES = 0.0  # > 0: stop training (mid-epoch; it is then validated and saved) after this many minutes
BATCH_SIZE = 16  # patches per training batch (the original: 16)
LEARNING_RATE = 2e-4  # Adam, as the method
# "adam": Adam with ADAM_BETAS (the method); beyond it, "sgd": SGD with Nesterov momentum SGD_MOMENTUM and weight
# decay WEIGHT_DECAY, nnU-Net's (0.99, 3e-5; with LEARNING_RATE=1e-2 and LR_SCHEDULE=poly as nnU-Net trains)
OPTIMIZER = "adam"
ADAM_BETAS = (0.5, 0.999)  # beta1 = 0.5, as the method
SGD_MOMENTUM = 0.99  # "sgd" only: Nesterov momentum
WEIGHT_DECAY = 3e-5  # "sgd" only
# Beyond the method (0 = off): validate and save an exponential moving average of the weights (and batch-norm
# statistics), updated after every step with this decay (e.g. 0.999); training itself goes on with the raw weights
EMA_DECAY = 0.0
# "constant": LEARNING_RATE throughout (the method); "poly": nnU-Net's LEARNING_RATE x (1 - progress) ** 0.9, progress
# the share of the training done: the larger of the share of EPOCHS done and (TRAIN_BUDGET_MINUTES > 0) of the budget
LR_SCHEDULE = "constant"
# Beyond the method (1 = off; LR_SCHEDULE "poly", no TRAIN_BUDGET_MINUTES): a snapshot ensemble (Huang et al., ICLR
# 2017) in one run: the EPOCHS split into this many equal cycles, the poly decay restarting at LEARNING_RATE in each,
# and each cycle's last weights saved as SNAPSHOT_CHECKPOINT (cycle 1, 2, ...) beside best.pt, for
# predict.py --checkpoint RUN/snapshot1.pt RUN/snapshot2.pt ... to average
SNAPSHOT_CYCLES = 1
SNAPSHOT_CHECKPOINT = "snapshot{cycle}.pt"
# "rmit": the original's 0.5 x (class-normalised log-likelihood loss + (1 - soft Dice of fluid vs background))
# (utils/train/method_loss.py); "balanced_ce_dice": CE_WEIGHT x class-balanced CE + DICE_WEIGHT x 4-class Dice;
# "ce_dice": CE_WEIGHT x plain (unweighted) CE + DICE_WEIGHT x 4-class Dice (nnU-Net's loss; no balancing that
# favours over-segmentation); "ce_lovasz": CE_WEIGHT x plain CE + LOVASZ_WEIGHT x Lovasz-softmax (the Jaccard
# index's convex surrogate, Berman et al. 2018, over the classes present), in place of the Dice.
LOSS = "rmit"
CE_WEIGHT = 0.5  # balanced_ce_dice, ce_dice and ce_lovasz only
DICE_WEIGHT = 0.5  # balanced_ce_dice and ce_dice only
LOVASZ_WEIGHT = 0.5  # ce_lovasz only
# Beyond the method (ce_dice and ce_lovasz; 0 = off): ReLayNet's boundary weighting (Roy et al. 2017) of the plain
# cross-entropy: a pixel within CE_BOUNDARY_RADIUS_PX pixels of a change of label weighs 1 + CE_BOUNDARY_WEIGHT
# (ReLayNet: 10, one pixel), the others 1 (a weighted mean): the outline of a pocket, where most errors lie
CE_BOUNDARY_WEIGHT = 0.0
CE_BOUNDARY_RADIUS_PX = 1
# balanced_ce_dice and ce_dice: their Dice term averages over all classes, background included (True), or over the
# fluids only (False, nnU-Net's choice: the background, most of every patch, then takes no share of the Dice)
DICE_BACKGROUND = True
BEST_BY = "val_loss"  # what picks best.pt: "val_loss" (the original) or "dice_mean_fluid" (validation patches)
# Adversarial training, the original's schedule (train_adversarial.py): from a finished segmentation run,
# `train.py --init-from RUN/best.pt --set ADVERSARIAL=True --set EPOCHS=50 --set PATCHES_PER_BSCAN=7
# --set EMPTY_PATCH_DROP_PROB=0.9 --set STRATIFY_BY=none` (no vendor stratification there). The critic sees softmax
# probabilities, as in the authors' script.
ADVERSARIAL = False
DISCRIMINATOR = "rmit"  # "rmit": the authors' discriminator; "strided": a small strided-conv critic
ADVERSARIAL_WEIGHT = 1.0  # lambda: segmenter loss += lambda x adversarial loss (the original: 1:1)
DISCRIMINATOR_LEARNING_RATE = 2e-4  # its Adam rate (the port's; the authors' own script used SGD at 0.01)
DISCRIMINATOR_L2_WEIGHT = 1e-4  # L2 on the discriminator's conv and dense kernels (the original's l2(1e-4)); 0 = none
# "discriminator_first" (the original): each step the discriminator trains first on one concatenated batch of the
# real (reference) and fake (softmax) pairs, then the segmenter against it; "separate": the segmenter first, then
# the discriminator on separate real and fake passes
ADVERSARIAL_STEP = "discriminator_first"
# Batch mixing (train_model.py): shuffle buffers of the augmented B-scans and of their patches (before the
# empty-patch drop), as the original (100, 1000); of the kept patches (the original: none, 0); a last partial batch
# dropped (the original).
BSCAN_SHUFFLE_BUFFER = 100
PATCH_SHUFFLE_BUFFER = 1000
KEPT_PATCH_SHUFFLE_BUFFER = 0
DROP_PARTIAL_BATCH = True
EMPTY_PATCH_DROP_PROB = 0.75  # probability of dropping a patch that holds no fluid (the original: 0.75) ...
DROP_EMPTY_IN_VALIDATION = True  # ... in validation too, as the original
# Training B-scans are drawn balanced by "vendor" (the original: nutsml Stratify(1, mode='up') on the vendor), by
# "fluid" (B-scans with and without fluid balanced, up-sampling the rarer), or "none" (each once, shuffled: the
# original's adversarial script).
STRATIFY_BY = "vendor"
# "rmit": every B-scan kept, a flipped copy added with FLIP_PROB, then to that stream a rotated copy (angle from
# [0, ROTATE_MAX_DEGREES], nearest neighbour) added with ROTATE_PROB (the original). "replace": each B-scan flipped
# with FLIP_PROB and rotated by an angle from [-ROTATE_MAX_DEGREES, ROTATE_MAX_DEGREES] with ROTATE_PROB, in place.
AUGMENT = "rmit"
FLIP_PROB = 0.5  # probability in [0, 1] (the original: 0.5)
ROTATE_PROB = 0.5  # probability in [0, 1] (the original: 0.5)
ROTATE_MAX_DEGREES = 10.0  # degrees (the original: 10)
# Beyond the method (AUGMENT = "replace" only; 0 = off): with this probability a B-scan is also magnified about its
# centre by a factor log-uniform in SCALE_RANGE (nnU-Net's scaling, 0.7-1.4 there), the same for depth and width
# or, with SCALE_ANISOTROPIC, one for each (retinas of other thicknesses and pockets of other sizes)
SCALE_PROB = 0.0
SCALE_RANGE = (0.8, 1.25)
SCALE_ANISOTROPIC = False
# Beyond the method (AUGMENT = "replace" only; 0 = off): with this probability a B-scan is also deformed elastically
# (after the flip, rotation and scaling): a displacement of up to ELASTIC_MAX_PX pixels of the B-scan in depth and in
# width, drawn uniformly at control points ELASTIC_GRID_PX pixels apart and interpolated cubically between them (a
# little more between points; TorchIO's RandomElasticDeformation; nnU-Net's is a smoothed noise field): pockets and
# layers of other shapes.
ELASTIC_PROB = 0.0
ELASTIC_MAX_PX = 8.0
ELASTIC_GRID_PX = 64
# Beyond the method (off by default): intensity augmentation of training B-scans, each part with p = 0.5: gamma
# up to INTENSITY_GAMMA either way, contrast 1 +- INTENSITY_CONTRAST, speckle-like Gamma noise of SPECKLE_LOOKS looks.
INTENSITY_AUGMENT = False
INTENSITY_GAMMA = 1.5
INTENSITY_CONTRAST = 0.25
SPECKLE_LOOKS = 8.0
# Beyond the method (off by default): A-scans without signal (every pixel of the patch's B-scan column 0: the real
# development set's unannotated edges, a device's black border) are left out of the loss and the validation
# metrics (their targets become IGNORE_LABEL); with the losses "ce_dice" and "balanced_ce_dice", not adversarial.
# Pair it with BLANK_COLUMNS_BACKGROUND at inference.
BLANK_COLUMNS_IGNORED = False
# Beyond the method (0 = off): before each epoch's validation and save, re-estimate the batch norms' running
# statistics over this many training batches (their own stream) with the current weights (torch.optim.swa_utils.
# update_bn); training is untouched. For short runs of the authors' network, whose running statistics
# (BN_MOMENTUM 0.01) trail its weights by about 100 steps.
BN_REESTIMATE_BATCHES = 0
VAL_BSCANS = 0  # validation B-scans: 0 = all (the original); N = a fixed choice of N, half with fluid where possible
VAL_FRESH_PATCHES = True  # each epoch samples new validation patches (the original); False: the same every epoch
VAL_LOSS_WITH_L2 = True  # the validation loss includes the L2 penalty (the original's Keras test loss; rmit_unet)
SEED = 0  # train.py's random generators: initial weights, patch sampling, augmentation, validation choice
DEVICE = "auto"  # auto (CUDA when present, else CPU), cuda or cpu
MIXED_PRECISION = True  # bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX), AMP on GPU (the original: fp32)
# With MIXED_PRECISION on a CPU with native bf16: time a convolution in bf16 and in fp32 once per process (about 0.4 s)
# and keep bf16 only where it is at least 1.1x as fast (utils/model/runtime.py): some CPUs with AVX512-BF16 run bf16
# convolutions slower than fp32 ones (an Intel Xeon VM without AMX: 0.6-0.7x). False: bf16 wherever the CPU has it.
BF16_SPEED_CHECK = True
# NHWC memory layout for the network; in fp32 on a CPU whose widest vector instructions are AVX2, the authors' network
# trains in NCHW even so (about 10% faster there; utils/model/runtime.py training_runtime). False: NCHW everywhere
CHANNELS_LAST = True
# Processes running the patch pipeline beside the model; 0 = in the training process; -1 = auto: 0 on CPU (a
# worker would take a core from the model step), on GPU up to 8 per process, as the cores allow.
LOADER_WORKERS = -1
# `make demo` (demo.py) trains and predicts with the preset DEMO_PRESET (a name in PRESETS below; "": config.py's
# own settings, the authors' method) for at most DEMO_EPOCHS epochs and DEMO_TRAIN_MINUTES of training, with
# DEMO_OVERRIDES on top. For the authors' network: DEMO_PRESET="" with DEMO_OVERRIDES=AUTHORS_DEMO_OVERRIDES (the
# two demos' figures: docs/quality.md, bench/quality.py configs demo_improved_e4b20 and demo_bnre).
# 4 epochs of 20 batches: the preset's poly decay lowers the rate from epoch to epoch and validation keeps the best
# epoch's weights; one epoch of 40 (or 80) batches at one rate segmented in most seeds but not all (pooled Dice
# 0.19-0.89 on the synthetic test set), 4 x 20 in all three measured (0.83-0.86).
DEMO_PRESET = "improved_patches"
DEMO_EPOCHS = 4
DEMO_TRAIN_MINUTES = 6.0  # a cap for slow machines; 0: none
DEMO_OVERRIDES = ("BATCHES_PER_EPOCH=20",)
# The authors' network in one epoch of 40 steps: its batch-norm statistics re-estimated over 20 batches before the
# save, and validation on 48 fixed B-scans rather than all of the synthetic set's
AUTHORS_DEMO_OVERRIDES = ("EPOCHS=1", "BATCHES_PER_EPOCH=40", "BN_REESTIMATE_BATCHES=20", "VAL_BSCANS=48",
                          "VAL_FRESH_PATCHES=False")

# --------------------------------------------------------------------------------------------------------------
# Inference (predict.py)
# --------------------------------------------------------------------------------------------------------------
INFERENCE_BATCH_SIZE = 8  # B-scans per forward pass
INFERENCE_TILE_SHAPE = (1024, 1024)  # (height, width), multiples of 32: larger (depth-scaled) B-scans are tiled
INFERENCE_TILE_OVERLAP = 64  # pixels by which tiles overlap; their softmax is blended across the overlap
# Which rows are segmented. "band" (the original): PATCH_SHAPE[0] rows (at Spectralis depth) centred on the middle
# of the B-scan's ROI (computed as prepare_data.py does), full width; nothing outside is labelled. "roi": the whole
# B-scan, labels kept inside the ROI only. "all": the whole B-scan.
PREDICT_REGION = "band"
# rmit_unet's output lacks 46 pixels on each side of its input. "background" (the original's test_model.py): only
# what the output covers is labelled, the band's first and last 46 rows and every B-scan's first and last 46 columns
# stay background. "padded": the input is zero-padded by 46 on every side, so every pixel is labelled.
UNPADDED_BORDER = "background"
# Beyond the method (off by default; measured in bench/quality.py, docs/quality.md):
TTA_FLIP = False  # also segment each B-scan mirrored left-right and average the two softmaxes
# Beyond the method (() = off; PREDICT_REGION "roi" or "all"): also segment each B-scan rotated about its centre by
# each of these angles in degrees (in the network's pixels, after the depth scaling; zeros outside), its softmax
# rotated back and averaged in where both passes have the network's own scores (with TTA_FLIP each rotated B-scan
# mirrored too), e.g. (-5.0, 5.0): training's rotations (ROTATE_MAX_DEGREES, on Spectralis the same pixels) at test
# time
TTA_ROTATE_DEGREES = ()
PRESENCE_GATE = 0.0  # a fluid whose presence score is below this is removed from the volume (0: off)
# Beyond the method (0: off, the arg-max of the softmax, as the original): a pixel is fluid where the softmax gives
# all fluids together at least this probability (1 - background), labelled its most probable fluid; above 0.5 a model
# that marks too much fluid marks less (chosen on patients other than those it is measured on: docs/quality.md)
FLUID_THRESHOLD = 0.0
MIN_COMPONENT_MM3 = 0.0  # connected fluid components smaller than this many mm³ are removed (0: off)
# Each fluid closed per B-scan by an ellipse of this radius in mm (0: off): pockets closer than about twice it join
# into one region, as graders who outline a whole cluster of cysts draw them (utils/predict/postprocess.py)
FLUID_CLOSING_MM = 0.0
# A-scans without signal (every pixel 0 after preprocessing: a device's black border, an export's blanked edge) lie
# outside the scan: True labels them background whatever the network says (the method labels every column)
BLANK_COLUMNS_BACKGROUND = False
PRESENCE_MIN_VOLUME_MM3 = 0.001  # presence score: the probability reached over at least this much fluid
# ETDRS grid (volumes.csv, utils/predict/etdrs.py): fluid volume per subfield, centred on the fovea (the lowest
# point of the inner retinal surface within FOVEA_SEARCH_RADIUS_MM of the scan centre, at least FOVEA_MIN_DEPTH_MM
# deeper than the surface around it; else the scan centre). Quadrants are named by image direction: top = toward
# B-scan 0, bottom = toward the last B-scan, left = toward column 0, right = toward the last column.
ETDRS_DIAMETERS_MM = (1.0, 3.0, 6.0)  # central disc, inner ring, outer ring
FOVEA_SEARCH_RADIUS_MM = 1.0
FOVEA_MIN_DEPTH_MM = 0.03

# Vendor files given to predict.py / prepare_data.py instead of oct.mhd (utils/io/vendor_files.py). Spacings are
# (x, y, z) = (A-scan spacing, depth, distance between B-scans) in mm, used only where the file does not hold them;
# () = unset: such a file then fails with a line naming the setting to give.
CIRRUS_IMG_SHAPE = (1024, 512)  # Zeiss .img (raw bytes, no header): B-scan (depth, width); oct-converter's default
CIRRUS_IMG_SPACING_MM = ()  # Zeiss .img holds no spacing: e.g. (0.0117, 0.00195, 0.047) for a 6 mm 512x128 cube
TOPCON_SPACING_MM = ()  # Topcon .fds/.fda without a @PARAM_SCAN_04/02 chunk (files with one give their own)
E2E_SPACING_XZ_MM = ()  # Heidelberg .e2e: (x, z) only; the file gives the depth spacing but not these two

# --------------------------------------------------------------------------------------------------------------
# Evaluation (evaluate.py)
# --------------------------------------------------------------------------------------------------------------
SPACING_RTOL = 1e-4  # relative tolerance when a prediction's voxel spacing is compared with its reference's

# --------------------------------------------------------------------------------------------------------------
# Presets: `--preset NAME` (every script) applies these overrides before the command line's --set, which win
# --------------------------------------------------------------------------------------------------------------
# Presets beyond the method, measured on real scans (bench/quality.py; docs/quality.md). Each was measured trained on
# every labelled case, without validation cases (then best.pt is the last epoch, where the decayed rate has settled
# the weights): prepare with SPLIT_FRACTIONS={'train': ..., 'val': 0.0, ...} to do the same; with validation cases,
# BEST_BY picks the epoch. Each carries its measured budget: EPOCHS=15 of BATCHES_PER_EPOCH=50 batches.
# "improved_patches" (bench config smp_unet_cedice_all_poly): smp's U-Net with plain cross-entropy + Dice, 256 x 128
# patches stratified across each B-scan's ROI and 50-batch epochs, nnU-Net's polynomial learning-rate decay over
# the budget, whole B-scans at inference. `make demo` trains it (DEMO_PRESET).
PRESETS = {
    "improved_patches": (
        "MODEL=smp_unet", "LOSS=ce_dice", "PATCH_CENTRES=stratified", "PATCHES_PER_BSCAN=8", "PATCH_BORDER=16",
        "AUGMENT=replace", "STRATIFY_BY=fluid", "BATCHES_PER_EPOCH=50", "EMPTY_PATCH_DROP_PROB=0.8",
        "DROP_EMPTY_IN_VALIDATION=False", "BEST_BY=dice_mean_fluid", "BSCAN_SHUFFLE_BUFFER=0",
        "PATCH_SHUFFLE_BUFFER=0", "KEPT_PATCH_SHUFFLE_BUFFER=64", "DROP_PARTIAL_BATCH=False", "VAL_BSCANS=48",
        "VAL_FRESH_PATCHES=False", "DEPTH_SCALE=spacing", "LR_SCHEDULE=poly", "EPOCHS=15", "PREDICT_REGION=all"),
}
# "improved_strips": the same trained on full-depth strips (512 x 128 in batches of 8: the same pixels per batch)
# (bench config improved_strips)
PRESETS["improved_strips"] = (*(item for item in PRESETS["improved_patches"] if item != "KEPT_PATCH_SHUFFLE_BUFFER=64"),
                             "PATCH_SHAPE=(512, 128)", "BATCH_SIZE=8", "KEPT_PATCH_SHUFFLE_BUFFER=32")
# "improved": the best measured (bench config improved_strips_wide): the same trained on strips as deep and twice as
# wide (512 x 256 in batches of 4), so a patch sees a pocket's neighbours and both of its ends. Two of its models
# (SEED=0 and SEED=1) segmenting as an ensemble (predict.py --checkpoint A.pt B.pt) are the README's recipe.
PRESETS["improved"] = (*(item for item in PRESETS["improved_patches"] if item != "KEPT_PATCH_SHUFFLE_BUFFER=64"),
                      "PATCH_SHAPE=(512, 256)", "BATCH_SIZE=4", "KEPT_PATCH_SHUFFLE_BUFFER=16")
