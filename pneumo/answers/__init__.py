"""The answers: the children's classes and calibration, the adults' read-out and opacity map."""
