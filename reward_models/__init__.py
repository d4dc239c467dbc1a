"""Pluggable rewards for EG-GRPO: the TRL reward contract, rule-based rewards, a ranking simulator
and its multi-objective rewards, built by name from YAML.

Example:
    >>> from reward_models import RewardContext, build_reward_funcs
    >>> context = RewardContext(codebook=codebook, vocab=vocab, data_dir="out/data", ranker_dir="out/ranker")
    >>> funcs, weights = build_reward_funcs([{"name": "sid_match"}, {"name": "ctr", "weight": 0.5}], context)
"""

from reward_models.base import ClusterIndex, RewardContext, RewardFunction, SIDReward
from reward_models.objectives import BUILTIN_OBJECTIVES, RankerObjective, RankerScorer
from reward_models.rank_aware import RankAwareReward
from reward_models.ranker import RankerConfig, RankingSimulator
from reward_models.registry import BUILTINS, build_reward, build_reward_funcs
from reward_models.rule_based import CategoryConsistencyReward, SIDMatchReward, ValidSIDReward
from reward_models.tiered import TieredLogMatchReward
from reward_models.validation import RewardError, checked, validate_rewards

__all__ = [
    "BUILTINS",
    "BUILTIN_OBJECTIVES",
    "CategoryConsistencyReward",
    "ClusterIndex",
    "RankAwareReward",
    "RankerConfig",
    "RankerObjective",
    "RankerScorer",
    "RankingSimulator",
    "RewardContext",
    "RewardError",
    "RewardFunction",
    "SIDMatchReward",
    "SIDReward",
    "TieredLogMatchReward",
    "ValidSIDReward",
    "build_reward",
    "build_reward_funcs",
    "checked",
    "validate_rewards",
]
