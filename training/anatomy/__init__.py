"""Training the learnt anatomy of a chest film: the lung-and-heart segmenter (segmenter.py)."""
