"""The search-funnel arena: a simulated online A/B of recall channels (docs/arena.md).

May import: eg_grpo.data, eg_grpo.decoding, eg_grpo.eval, eg_grpo.io, eg_grpo.sid
"""

from eg_grpo.arena.config import ArenaArguments
from eg_grpo.arena.report import render_arena_section
from eg_grpo.arena.run import run

__all__ = ["ArenaArguments", "render_arena_section", "run"]
