"""Stage 1, prepare_data.py: intensity, histogram matching and medians, slice PNGs and the slice index,
entropy ROI masks, and the train/val/test split."""
