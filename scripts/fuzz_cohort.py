"""Build the fuzz cohort (:mod:`infnet_monai.testing.fuzz`) from real seeds, segment it with the command line and
print JSON: how many inputs of each kind, how many came back ``ok``, and every wrong outcome (a broken input ``ok``,
a valid input with another status than its unchanged seed, a missing or repeated row, a changed input file).

Example::

    python scripts/fuzz_cohort.py --nifti ../shared/data/ct/abdomen_3mm_small.nii.gz \\
        --dicom ../shared/data/ct/abdomen_dicom ../shared/data/ct/chest_2slice_dicom --work /tmp/fuzz
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from infnet_monai.cli import main as cli_main
from infnet_monai.testing.fuzz import fuzz_inputs, sha_tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nifti", nargs="*", default=[], help="NIfTI seed files")
    parser.add_argument("--dicom", nargs="*", default=[], help="DICOM seed series folders")
    parser.add_argument("--work", required=True, help="folder for the cohort and the outputs (emptied first)")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    cohort, out = work / "cohort", work / "out"
    made = {}
    for i, seed in enumerate(args.nifti):
        made.update({k: (m, f"n{i}") for k, m in fuzz_inputs(cohort, seed, None, args.seed, prefix=f"n{i}-").items()})
    for i, seed in enumerate(args.dicom):
        made.update({k: (m, f"d{i}") for k, m in fuzz_inputs(cohort, None, seed, args.seed, prefix=f"d{i}-").items()})
    before = sha_tree(cohort)
    started = time.time()
    command = ["segment", str(cohort), "-o", str(out), "--device", "cpu", "-q"]
    code = cli_main(command + (["--model", args.model] if args.model else []))
    seconds = time.time() - started
    with open(out / "burden.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by_entry: dict[str, list[dict]] = {}
    for row in rows:
        by_entry.setdefault(Path(row["source_path"]).relative_to(cohort).parts[0], []).append(row)
    baseline = {seed: by_entry.get(name, [{}])[0].get("status") for name, (m, seed) in made.items() if m.name.endswith("-copy")}
    wrong, statuses = [], Counter()
    for name, (m, seed) in made.items():
        found = by_entry.get(name, [])
        if len(found) != 1:
            wrong.append({"input": name, "problem": f"{len(found)} rows"})
            continue
        status = found[0]["status"]
        statuses[f"{m.expect}:{status}"] += 1
        if m.expect == "refused" and status == "ok":
            wrong.append({"input": name, "problem": "broken input came back ok"})
        if m.expect == "ok" and status != baseline.get(seed):
            wrong.append({"input": name, "problem": f"valid input {status} (its seed: {baseline.get(seed)})", "error": found[0]["error"]})
    report = {
        "inputs": len(made),
        "kinds": Counter(m.expect for m, _ in made.values()),
        "outcomes": statuses,
        "seed_status": baseline,
        "wrong": wrong,
        "extra_rows": sorted(set(by_entry) - set(made)),
        "inputs_unchanged": sha_tree(cohort) == before,
        "longest_error_chars": max((len(r["error"]) for r in rows), default=0),
        "exit_code": code,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(report, indent=2))
    return 0 if not wrong and report["inputs_unchanged"] else 1


if __name__ == "__main__":
    sys.exit(main())
