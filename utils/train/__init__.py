"""Stage 2, train.py: the method's patch sampling nuts, the data pipeline, losses and their base, the learning-rate
schedule, training metrics from confusion counts, and the epoch loop with its log."""
