"""Several ``python -m monai.bundle ...`` commands in one process, in order: ``python bundle_steps.py '[[args...], ...]'``
(or under ``torchrun``, each rank running every step). Each step runs the package's own ``__main__`` (the users'
entry point) afresh with its own ``sys.argv``; only the imports, about 5 s a process here, are shared. Before each
step a line ``=== monai.bundle step <i> started <time.time_ns()> ===`` is printed; a step that exits non-zero ends
the process with that step named."""

import json
import runpy
import sys
import time

MARK = "=== monai.bundle step {} started {} ==="


def main(steps: list[list[str]]) -> None:
    for i, argv in enumerate(steps):
        print(MARK.format(i, time.time_ns()), flush=True)
        sys.argv = ["monai.bundle", *argv]
        try:
            runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code not in (None, 0):
                sys.exit(f"step {i} ({argv[0]}) exited with {e.code}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
