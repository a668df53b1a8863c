"""The checks: is it a chest X-ray, and whose answer (child or adult), or no verdict and why."""
