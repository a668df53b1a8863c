"""Pneumonia Detector's inference library, shared by the app and training."""
