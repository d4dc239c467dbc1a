"""``python -m eg_grpo.stages NAME [--config YAML] [--option value ...]``: runs one stage by name."""

import sys

from eg_grpo.stages import STAGES, get_stage


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            __doc__
            + "\nstages: "
            + ", ".join(STAGES)
            + "\n(`python -m eg_grpo.stages NAME --help` lists its options)"
        )
        return 0
    if argv[0] not in STAGES:
        print(f"error: unknown stage {argv[0]!r}; known: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    from eg_grpo.cli import guarded

    stage = get_stage(argv[0])
    # Parsing inside the guard: a bad setting (a config typo) is one line and exit 2, not a traceback.
    return guarded(stage.name, lambda: stage.run_function()(*stage.parse(argv[1:])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
