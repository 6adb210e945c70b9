#!/usr/bin/env python
"""Regenerate the README's overview picture, ``bundles/infnet_covid/docs/demo_overview.png``, from the demo.

Runs ``infnet-covid demo -o DIR -q`` (the generated chest CT phantom, seed 0, default options, the shipped models)
and copies ``DIR/segmentation/phantom_chest/overview.png`` over the picture. Prints JSON: the command, its exit code,
the picture's path, size in bytes and SHA-256, and the seconds it took. Run it after a change that alters the
overview picture, so that the README shows what the current code draws::

    python scripts/make_demo_picture.py                 # a temporary DIR, removed afterwards
    python scripts/make_demo_picture.py --work /tmp/d   # keep the demo's outputs in /tmp/d
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PICTURE = REPO / "bundles" / "infnet_covid" / "docs" / "demo_overview.png"
DEMO_OVERVIEW = Path("segmentation") / "phantom_chest" / "overview.png"
"""Where ``infnet-covid demo -o DIR`` puts the phantom's overview picture, relative to DIR."""


def demo_command(work: Path) -> list[str]:
    """The demo's command line; through ``python -m infnet_monai.cli`` when the console script is not on PATH."""
    command = shutil.which("infnet-covid")
    prefix = [command] if command else [sys.executable, "-m", "infnet_monai.cli"]
    return prefix + ["demo", "-o", str(work), "-q"]


def make_picture(work: Path, destination: Path = PICTURE) -> dict:
    """Run the demo into ``work`` and copy its overview picture to ``destination``.

    Args:
        work: the demo's output folder (created by the demo; it must not hold an earlier run's outputs).
        destination: where the picture goes.

    Returns:
        what was done: ``command``, ``exit_code``, ``picture``, ``bytes``, ``sha256``, ``seconds``.

    Raises:
        RuntimeError: the demo failed or wrote no overview picture; the destination is left as it was.
    """
    command = demo_command(work)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    source = work / DEMO_OVERVIEW
    if done.returncode != 0 or not source.is_file():
        raise RuntimeError(
            f"'{' '.join(command)}' exited with {done.returncode} and "
            f"{'wrote' if source.is_file() else 'did not write'} {source}; its stderr:\n{done.stderr.strip()}"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(source, partial)
    partial.replace(destination)  # never a half-copied picture in the docs
    data = destination.read_bytes()
    return {
        "command": " ".join(command),
        "exit_code": done.returncode,
        "picture": str(destination),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "seconds": round(seconds, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="demo output folder to keep (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=PICTURE, help=f"picture to write (default: {PICTURE.relative_to(REPO)})")
    args = parser.parse_args(argv)
    if args.work is not None:
        result = make_picture(args.work, args.output)
    else:
        with tempfile.TemporaryDirectory(prefix="infnet-demo-") as tmp:
            result = make_picture(Path(tmp) / "demo", args.output)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
