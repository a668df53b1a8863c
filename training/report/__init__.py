"""From the best checkpoint to a run folder: calibration, threshold, metrics, plots and the model card."""
