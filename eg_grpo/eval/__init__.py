"""Evaluation: offline metrics of a model's SIDs, the recall channel, comparability checks, paper tables.

May import: eg_grpo.data, eg_grpo.decoding, eg_grpo.io, eg_grpo.modeling, eg_grpo.sid
"""
