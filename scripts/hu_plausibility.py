"""The figures behind the plausible-HU checks of :mod:`infnet_monai.io.hounsfield` on real scans. Prints JSON.

For every case under ``--data`` (default: the shared CT folder), as :func:`~infnet_monai.io.volume.load_ct` sees it
before the checks: the padding share (voxels at the volume's minimum), the share of the other voxels outside
:data:`~infnet_monai.io.hounsfield.HU_PLAUSIBLE_RANGE` and above +1000 HU, and the median of the image's edge (padding
aside), next to the limits the loader applies.

    python scripts/hu_plausibility.py --data ../shared/data/ct
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import infnet_monai.io.hounsfield as hounsfield
from infnet_monai.io.cases import discover_cases
from infnet_monai.io.volume import CaseError, load_ct


def measure(image: torch.Tensor) -> dict:
    """The plausibility figures of a ``(1, X, Y, Z)`` volume as loaded (HU, before the checks)."""
    data = image[0].float()
    padding = data.min()
    rest = data[data != padding]
    low, high = hounsfield.HU_PLAUSIBLE_RANGE
    edges = torch.cat([data[[0, -1]].reshape(-1), data[:, [0, -1]].reshape(-1)])
    edges = edges[edges != padding]
    return {
        "padding_percent": round(100.0 * (1.0 - rest.numel() / data.numel()), 3),
        "outside_range_percent": round(100.0 * float(((rest < low) | (rest > high)).float().mean()), 4) if rest.numel() else None,
        "above_1000_percent": round(100.0 * float((rest > 1000).float().mean()), 4) if rest.numel() else None,
        "edge_median_hu": float(edges.median()) if edges.numel() else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct")
    args = parser.parse_args(argv)
    seen: dict[str, dict] = {}
    check = hounsfield._check_hu_range

    def spy(image, name, scaling=""):  # the figures of each volume at the point the loader checks it
        seen[name] = measure(image)
        return check(image, name, scaling)

    hounsfield._check_hu_range = spy
    cases = {}
    try:
        for case in discover_cases(args.data):
            try:
                load_ct(case)
                cases[case.case_id] = {"status": "loaded", **seen.get(str(case.source_path), {})}
            except CaseError as e:
                cases[case.case_id] = {"status": "refused", "error": str(e)[:160], **seen.get(str(case.source_path), {})}
    finally:
        hounsfield._check_hu_range = check
    report = {
        "limits": {
            "outside_range_percent": 100 * hounsfield.HU_MAX_IMPLAUSIBLE_FRACTION,
            "above_1000_percent": 100 * hounsfield.HU_MAX_DENSE_FRACTION,
            "edge_median_hu": hounsfield.HU_MAX_EDGE_MEDIAN,
        },
        "cases": cases,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
