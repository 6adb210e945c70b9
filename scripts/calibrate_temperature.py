"""Choose a model's logit temperature on the validation split and write a calibrated copy of the checkpoint.

The sweep runs the model on the validation slices (the split the training configs hold out) once per temperature,
scores the 8-bit maps with the paper's protocol and keeps the largest temperature whose mean Dice is within
``--tolerance`` of the best (:func:`infnet_monai.apps.calibration.calibrate_model`, also available as
``infnet-covid calibrate`` for any folder of labeled slices). The weights are not touched; the checkpoint gains a
``calibration`` entry that ``predict-slices`` and ``segment`` use by default. Prints the sweep as JSON (and a
markdown table with --markdown).

    python scripts/calibrate_temperature.py --model runs/infnet_covid/model.pt --output runs/infnet_covid/model_calibrated.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from infnet_monai.apps.calibration import DEFAULT_TEMPERATURES, SWEEP_KEYS, calibrate_model
from infnet_monai.data import labeled_splits, shared_data_dir


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model checkpoint to calibrate")
    parser.add_argument("--output", required=True, help="where to write the calibrated checkpoint (not --model)")
    parser.add_argument("--dataset_dir", default=str(shared_data_dir()))
    parser.add_argument("--num_val", type=int, default=10)
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(DEFAULT_TEMPERATURES))
    parser.add_argument("--tolerance", type=float, default=0.005, help="mean-Dice slack for a larger temperature")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    val = labeled_splits(args.dataset_dir, num_val=args.num_val, seed=args.split_seed)["validation"]
    calibration = calibrate_model(
        args.model,
        args.output,
        [d["image"] for d in val],
        [d["label"] for d in val],
        temperatures=args.temperatures,
        tolerance=args.tolerance,
        device="cpu",
        note=f"validation split of labeled_splits(num_val={args.num_val}, seed={args.split_seed}); "
        "python scripts/calibrate_temperature.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    result = {"model": args.model, "output": args.output, "seconds": round(time.time() - start, 1), **calibration}
    print(json.dumps(result))
    if args.markdown:
        chosen = calibration["temperature"]
        print("| temperature | " + " | ".join(SWEEP_KEYS) + " |")
        print("| --- " * (len(SWEEP_KEYS) + 1) + "|")
        for r in calibration["sweep"]:
            mark = " (chosen)" if r["temperature"] == chosen else ""
            print(f"| {r['temperature']:g}{mark} | " + " | ".join(f"{r[c]:.3f}" for c in SWEEP_KEYS) + " |")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
