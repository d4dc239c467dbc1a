"""Semantic IDs: text encoders, RQ-VAE with the CQ constraints, baselines and the codebook.

May import: eg_grpo.plugins
"""
