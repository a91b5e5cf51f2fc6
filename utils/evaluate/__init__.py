"""Stage 4, evaluate.py: the RETOUCH measures per case (Dice from label volumes, absolute volume difference) and
per vendor (detection AUC)."""
