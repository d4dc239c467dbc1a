"""The comparison protocol of docs/protocol.md: every arm tuned alike on valid, then seeds on test.

    python recipes/protocol.py --config recipes/configs/demo/protocol/protocol.yaml              # tune, select, test, report
    python recipes/protocol.py --config recipes/configs/demo/protocol/protocol.yaml --step select

Re-running continues where it stopped. The runs are :mod:`eg_grpo.protocol`'s.
"""

import _recipe_path  # noqa: F401  (first: see recipes/_recipe_path.py)

from eg_grpo.protocol.__main__ import main

if __name__ == "__main__":
    main()
