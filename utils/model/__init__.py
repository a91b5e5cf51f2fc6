"""What training and prediction share: the networks and their checkpoints, the input depth scaling, and the
runtime (device, precision, DDP)."""
