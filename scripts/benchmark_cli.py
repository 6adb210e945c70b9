#!/usr/bin/env python
"""Start-up time of the ``infnet-covid`` command line: seconds for ``--version``, ``--help``, a subcommand's
``--help`` and a usage error (median of ``--repeats`` fresh processes). Prints JSON.

None of these imports torch or MONAI (tested in ``tests/test_cli.py``); the subcommand that runs does.

    python scripts/benchmark_cli.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "version": ["--version"],
    "help": ["--help"],
    "segment_help": ["segment", "--help"],
    "usage_error": ["segment"],
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    command = shutil.which("infnet-covid")
    prefix = [command] if command else [sys.executable, "-m", "infnet_monai.cli"]
    result: dict = {"command": prefix[0], "repeats": args.repeats, "seconds": {}}
    for name, extra in CASES.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(prefix + extra, capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        result["seconds"][name] = round(statistics.median(times), 3)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import monai"], check=True)
    result["import_monai_seconds"] = round(time.perf_counter() - start, 3)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
