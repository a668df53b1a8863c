"""The scope checks' fits: not-a-chest-X-ray, the population router, turned films; the variants they learn from."""
