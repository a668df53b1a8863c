"""Trains the pneumonia model and publishes it to the Hugging Face Hub."""
