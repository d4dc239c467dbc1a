"""``python -m eg_grpo.stages NAME [--config YAML] [--option value ...]``: runs one stage by name."""

import sys

from eg_grpo.io import StageConflict
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
    stage = get_stage(argv[0])
    arguments = stage.parse(argv[1:])
    try:
        stage.run_function()(*arguments)
    except StageConflict as err:
        print(f"[{stage.name}] {err}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as err:  # bad input: our messages name the fix
        print(f"[{stage.name}] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
