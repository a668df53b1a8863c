"""Shipping: ONNX export and int8, pushing a run folder to the Hub, deploying the Space."""
