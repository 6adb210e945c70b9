"""``infnet-covid`` console command. Each subcommand only parses arguments and calls the Python API.

Exit codes: 0 success, 1 some inputs failed (the others were processed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from infnet_monai import __version__

__all__ = ["main", "build_parser"]

logger = logging.getLogger("infnet_monai")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _progress(desc: str, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit="batch", file=sys.stderr)


def _cmd_predict_slices(args: argparse.Namespace) -> int:
    from infnet_monai.inferers.slices import predict_slice_folder

    report = predict_slice_folder(
        args.input_dir,
        args.output,
        model_path=args.model,
        device=args.device,
        batch_size=args.batch_size,
        flip_tta=not args.no_tta,
        progress=_progress("predict-slices", args.quiet),
    )
    print(json.dumps({"written": len(report.written), "failed": len(report.failed), "output_dir": str(args.output)}))
    for path, message in report.failed:
        print(f"FAILED {path}: {message}", file=sys.stderr)
    return EXIT_FAILURES if report.failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infnet-covid",
        description="COVID-19 lung infection segmentation in chest CT with Inf-Net (MONAI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "predict-slices",
        help="probability PNGs for a folder of 2D CT slices (.jpg/.jpeg/.png)",
        description="For every .jpg/.jpeg/.png in INPUT_DIR write OUTPUT_DIR/<stem>.png: an 8-bit probability map "
        "(0-255) of infection with the input's height and width.",
    )
    p.add_argument("input_dir", help="folder of 8-bit lung-windowed CT slices")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--model", default=None, help="model checkpoint (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    p.add_argument("--no-tta", action="store_true", help="disable left-right flip test-time augmentation")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict_slices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be >= 1")
    from infnet_monai.io.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, PermissionError, CheckpointError) as e:
        # usage-level problems: bad paths, bad options, unusable model
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
