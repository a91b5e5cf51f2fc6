"""Stage 2, train.py: the method's patch sampling nuts, the data pipeline, losses and their base, the optimisers and
the weight penalty, the learning-rate schedule, training metrics from confusion counts, and the training step and
epoch loop with its log."""
