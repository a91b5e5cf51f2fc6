"""What training and prediction share: the networks and their checkpoints, the network's input scale (intensities
and depth), and the runtime (device, precision, DDP)."""
