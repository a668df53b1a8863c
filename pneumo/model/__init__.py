"""The model: which weights (run folder, Hub), on which runtime (ONNX or Keras), one pass (preprocess, predict, heatmap)."""
