"""Stage 3, predict.py: whole-volume inference (label volumes, fluid volumes in mm3, presence scores) and the
overlay PNGs."""
