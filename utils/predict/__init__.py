"""Stage 3, predict.py: whole-volume inference (label volumes, fluid volumes in mm3, presence scores), the overlay
PNGs and reports, and the run around them (settings, input cases, output folder, case markers, volumes.csv); its
Python API is :class:`utils.predict.predictor.Predictor`."""
