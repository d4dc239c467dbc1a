"""Semantic IDs: text encoders, RQ-VAE with the CQ constraints, baselines and the codebook."""
