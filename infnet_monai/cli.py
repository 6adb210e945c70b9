"""``infnet-covid`` console command: ``predict-slices``, ``calibrate``, ``segment``, ``serve`` and ``demo``.

Each subcommand parses its arguments and calls the Python API (:mod:`infnet_monai.apps`,
:mod:`infnet_monai.pipeline`, :mod:`infnet_monai.net`). torch, MONAI and pynetdicom are imported only inside the subcommand that runs, so ``--help``,
``--version`` and argument errors answer at once (``scripts/benchmark_cli.py``: 0.05 s against 4 s or more for
``import monai`` alone); option defaults come from the light :mod:`infnet_monai.defaults`.

Exit codes: 0 success, 1 some inputs failed (the others were processed), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from infnet_monai import __version__
from infnet_monai.utils.progress import SliceBar, bars_wanted, case_bar  # light: no torch
from infnet_monai.utils.table import format_burden_table

__all__ = ["main", "build_parser"]

logger = logging.getLogger("infnet_monai")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
"""Exit codes: no case failed (status ok, or no_lung for a scan without lung); some cases failed (status error, see
burden.csv); a usage error or an OUTPUT in use
by another run (nothing was done); the run could not go on (e.g. the table could not be written; cases finished
before that keep their outputs, and --resume continues)."""


def _cmd_predict_slices(args: argparse.Namespace) -> int:
    """For every .jpg/.jpeg/.png in INPUT_DIR write OUTPUT_DIR/<stem>.png: an 8-bit probability map (0-255) of
    infection with the input's height and width; with --classes also the GGO and consolidation maps in OUTPUT_DIR/ggo/
    and OUTPUT_DIR/consolidation/."""
    from infnet_monai.apps.slices import predict_slice_folder

    report = predict_slice_folder(
        args.input_dir,
        args.output,
        model_path=args.model,
        device=args.device,
        batch_size=args.batch_size,
        flip_tta=args.tta,
        progress=case_bar("predict-slices", args.quiet, unit="batch"),
        temperature=args.temperature,
        classes=args.classes,
        class_model_path=args.class_model,
    )
    print(json.dumps({"written": len(report.written), "failed": len(report.failed), "output_dir": str(args.output)}))
    for path, message in report.failed:
        print(f"FAILED {path}: {message}", file=sys.stderr)
    return EXIT_FAILURES if report.failed else EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """Run the model on labeled 2D slices at several logit temperatures (probability = sigmoid(logit / T)), score
    each with the paper's protocol and write a copy of the checkpoint that records the largest T whose mean Dice is
    within --tolerance of the best. Masks at threshold 0.5 do not depend on T. Use slices the model was not trained
    on."""
    from infnet_monai.data.covid_semiseg import IMAGE_SUFFIXES
    from infnet_monai.apps.calibration import calibrate_model
    from infnet_monai.utils.model_path import default_model_path

    images_dir, masks_dir = Path(args.images), Path(args.masks)
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise NotADirectoryError(f"'{d}' does not exist or is not a folder.")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.name for p in images if p.stem not in masks]
    if missing or not images:
        raise ValueError(
            f"every slice in '{images_dir}' needs a mask with the same name stem in '{masks_dir}'; "
            + (f"missing for {missing[:5]}" if missing else "no .jpg/.jpeg/.png slices found") + "."
        )
    calibration = calibrate_model(
        args.model or default_model_path(),
        args.output,
        images,
        [masks[p.stem] for p in images],
        temperatures=args.temperatures,
        tolerance=args.tolerance,
        device=args.device,
        note=f"infnet-covid calibrate on {len(images)} slices of '{images_dir}'",
    )
    print(json.dumps({"output": str(args.output), "temperature": calibration["temperature"], "sweep": calibration["sweep"]}))
    return EXIT_OK


def _segment_kwargs(args: argparse.Namespace) -> dict:
    return {
        "model_path": args.model,
        "device": args.device,
        "batch_slices": args.batch_slices,
        "threshold": args.threshold,
        "min_lesion_volume_mm3": args.min_lesion_mm3,
        "min_lesion_extent_mm": args.min_lesion_extent_mm,
        "min_lesion_area_mm2": args.min_lesion_area_mm2,
        "through_plane_mm": args.through_plane_mm,
        "min_lesion_depth_mm": args.min_lesion_depth_mm,
        "max_slices": args.max_slices,
        "flip_tta": args.tta,
        "temperature": args.temperature,
        "classes": not args.no_classes,
        "class_model_path": args.class_model,
        "overview": not args.no_overview,
        "dicom_seg": not args.no_dicom_seg,
        "dicom_sr": not args.no_dicom_sr,
        "backend": args.backend,
        "precision": args.precision,
        "max_slice_gap_mm": args.max_slice_gap_mm,
    }


def _cmd_segment(args: argparse.Namespace) -> int:
    """Segment COVID-19 lung infection in a NIfTI file, a DICOM series folder, or a folder of many cases. Writes, per
    case, OUTPUT/<case>/infection.nii.gz (0/1), infection_classes.nii.gz (1 GGO, 2 consolidation), lung.nii.gz (1
    right, 2 left), all in the scan's own geometry, overview.png (axial tiles, coronal and sagittal views),
    segmentation.dcm (DICOM-SEG) and measurements.dcm (DICOM SR with the burden; both for DICOM inputs),
    lesions.csv (one row per lesion: volume, side, zone, position, diameter), probability.nii.gz (with --save-prob)
    and stats.json (burden, zones and zone score); and for the cohort OUTPUT/burden.csv (one row per case, errors
    included, rewritten after every case), OUTPUT/followup.csv (when a patient has several scans, or with --pairs)
    and OUTPUT/report.html. With --from-pacs and --studies, the listed studies are retrieved from a PACS (C-GET) and
    segmented one by one, one row per study, and with --send-to the DICOM-SEG and SR are sent on (docs/dicom-node.md).
    Exit code 0: no case failed (a case without lung has status no_lung); 1: some failed (see burden.csv); 2: usage error, or OUTPUT is in use
    by another run; 3: the run could not go on (e.g. the disk is full; --resume continues)."""
    from infnet_monai.utils.launch import dist_env
    from infnet_monai.utils.preflight import OutputLock, check_input

    if args.batch_slices < 1:
        raise ValueError("--batch-slices must be >= 1")
    if args.from_pacs is not None or args.input is None:
        return _segment_from_pacs(args)
    if args.studies is not None or args.send_to:
        raise ValueError("--studies and --send-to go with --from-pacs (pull mode); see docs/dicom-node.md")
    # usage errors and a busy OUTPUT are answered here, before torch is imported and before the input is scanned
    input_path, output_dir = check_input(args.input), Path(args.output)
    lock = None
    if dist_env() is None:  # under torchrun, rank 0 takes it once the ranks have met
        lock = OutputLock(output_dir, input_path).acquire()
    try:
        return _segment(args, lock)
    finally:
        if lock is not None:
            lock.release()  # OUTPUT goes again when this run made it and found nothing to write


def _segment(args: argparse.Namespace, lock) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from infnet_monai.pipeline.segment import segment_cohort

    quiet = args.quiet
    bar = SliceBar() if bars_wanted(quiet) else None
    with logging_redirect_tqdm():  # log lines go above the bars, not glued onto them
        run = {"save_probability": args.save_prob, "resume": args.resume, "strict": args.strict, "pairs": args.pairs}
        report = segment_cohort(
            args.input, args.output, progress=case_bar("segment", quiet), slice_progress=bar, lock=lock, **run,
            **_segment_kwargs(args),
        )
    if bar is not None:
        bar.close()
    if report.reporter:  # under torchrun, rank 0 prints the cohort's table
        print(report.summary())
    return report.exit_code


def _segment_from_pacs(args: argparse.Namespace) -> int:
    """Pull mode of ``segment`` (:func:`infnet_monai.net.pull.pull_studies`)."""
    from infnet_monai.net.pull import read_study_keys
    from infnet_monai.net.spool import default_spool

    if (args.input is None) == (args.from_pacs is None):
        raise ValueError("give INPUT, or --from-pacs AE@host:port with --studies FILE, not both")
    if args.studies is None:
        raise ValueError("--from-pacs needs --studies FILE (one StudyInstanceUID or AccessionNumber a line)")
    if args.pairs is not None or args.strict:
        raise ValueError("--pairs and --strict do not apply to --from-pacs (one case per study)")
    from infnet_monai.utils.launch import dist_env

    if dist_env() is not None:
        raise ValueError("--from-pacs runs in one process (one study at a time), not under torchrun")
    keys = read_study_keys(args.studies)
    _quiet_pynetdicom(args)
    from infnet_monai.net.pull import pull_studies
    from infnet_monai.utils.table import outcome_counts

    options = {**_segment_kwargs(args), "save_probability": args.save_prob}
    rows = pull_studies(
        args.output, args.spool or default_spool(args.output), options, args.from_pacs, keys, args.ae_title,
        args.send_to, args.resume,
    )  # fmt: skip
    print(format_burden_table(rows))
    print(outcome_counts(rows))
    print(f"table: {Path(args.output) / 'burden.csv'}")
    return EXIT_FAILURES if any(r.get("status") == "error" for r in rows) else EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run a DICOM node: a Storage SCP (with C-ECHO) that spools the CT images sent by the allowed calling AEs, by study
    and series, segments each series once no instance of it arrived for --idle-seconds (one at a time, the same
    outputs as segment under OUTPUT/<SeriesInstanceUID>/, one row each in OUTPUT/burden.csv) and sends its
    segmentation.dcm and measurements.dcm to --send-to (and back to a caller whose --allow entry has a port). Every
    spooled series and unsent result is picked up at the next start; SIGTERM finishes the current case, then stops.
    See docs/dicom-node.md."""
    from infnet_monai.net.node import NodeSettings, serve
    from infnet_monai.net.spool import default_spool

    if args.batch_slices < 1:
        raise ValueError("--batch-slices must be >= 1")
    _quiet_pynetdicom(args)
    settings = NodeSettings(
        args.ae_title, args.host, args.port, args.send_to, args.idle_seconds, args.series_timeout, args.send_retries
    )
    spool = args.spool or default_spool(args.output)
    return serve(args.output, spool, _segment_kwargs(args), settings, args.allow, args.max_spool_gb)


def _quiet_pynetdicom(args: argparse.Namespace) -> None:
    """pynetdicom's own lines (each PDU and DIMSE message) only with -v; the node logs one line per association,
    series and send."""
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if args.verbose else logging.WARNING)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate a synthetic chest CT in Hounsfield units with lesions of known volume, segment it and print the
    burden table next to the truth. Writes OUTPUT/input/ (the phantom), OUTPUT/truth/ (its true infection) and
    OUTPUT/segmentation/ (what segment writes: masks, overview.png, stats.json, burden.csv, report.html)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from infnet_monai.pipeline.demo import run_demo

    bar = SliceBar() if bars_wanted(args.quiet) else None
    with logging_redirect_tqdm():  # the same bars as segment
        report, truth = run_demo(
            args.output, seed=args.seed, progress=case_bar("demo", args.quiet), slice_progress=bar,
            **_segment_kwargs(args),
        )
    if bar is not None:
        bar.close()
    print(format_burden_table(report.rows))
    print(
        f"phantom truth: infection {truth['infection_volume_ml']:.1f} mL in {len(truth['lesions'])} lesions, "
        f"lung {truth['lung_volume_ml']:.1f} mL ({truth['infection_percent']:.1f}% infected)"
    )
    print(f"outputs: {Path(args.output) / 'segmentation'}")
    print(f"report: {Path(args.output) / 'segmentation' / 'report.html'}")
    return report.exit_code


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    from infnet_monai.defaults import BACKENDS, DEFAULT_MAX_SLICES, DEFAULT_MIN_LESION_MM3, PRECISIONS, THRESHOLD
    from infnet_monai.defaults import MIN_LESION_AREA_MM2 as DEFAULT_MIN_LESION_AREA_MM2
    from infnet_monai.defaults import MIN_LESION_DEPTH_MM as DEFAULT_MIN_LESION_DEPTH_MM
    from infnet_monai.defaults import MIN_LESION_EXTENT_MM as DEFAULT_MIN_LESION_EXTENT_MM
    from infnet_monai.defaults import THROUGH_PLANE_MM as DEFAULT_THROUGH_PLANE_MM

    _add_io_options(p, "output folder (created if missing)")
    numeric = (  # flag, type, default, help
        ("--batch-slices", int, 16, "axial slices per forward pass"),
        ("--threshold", float, THRESHOLD, "infection probability threshold"),
        ("--min-lesion-mm3", float, DEFAULT_MIN_LESION_MM3, "drop connected lesions smaller than this (mm3)"),
        ("--min-lesion-extent-mm", float, DEFAULT_MIN_LESION_EXTENT_MM, "drop lesions spanning fewer axial mm (slices x spacing)"),
        ("--min-lesion-area-mm2", float, DEFAULT_MIN_LESION_AREA_MM2, "drop in-plane pieces of infection smaller than this on a slice (mm2)"),
        ("--through-plane-mm", float, DEFAULT_THROUGH_PLANE_MM, "judge each lesion through an axial window of this length (mm): it stays, whole, only if the lesion seen where the mean probability over the window also reaches the threshold passes the gates (0: off)"),
        ("--min-lesion-depth-mm", float, DEFAULT_MIN_LESION_DEPTH_MM, "drop lesions that reach less than this far into the lung (mm from the chest wall, the mediastinum and the diaphragm): bands along the lung's edge (0: off)"),
        ("--max-slices", int, DEFAULT_MAX_SLICES, "refuse volumes longer than this, a guard against a mistaken input"),
    )
    _add_numeric_options(p, numeric)
    p.add_argument(
        "--max-slice-gap-mm", type=float, default=None, metavar="MM",
        help="opt-in for thin-slice scans: run the network on slices at most MM apart and interpolate the slices "
        "between (faster; masks differ from the full run, and a 5-mm gap made a false lesion on a nodule scan: see "
        "docs/performance.md; default: every slice)",
    )
    _add_model_options(p, "average with left-right flipped slices (2x time)")
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="what runs the network: auto = OpenVINO on the CPU when installed and in agreement with torch, else "
        "torch (default: auto)",
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="network precision; bf16 is faster only on CPUs with bfloat16 matrix units and moves probabilities "
        "(default: fp32)",
    )
    p.add_argument(
        "--no-classes", action="store_true",
        help="skip GGO / consolidation: no infection_classes.nii.gz, empty per-class burden columns",
    )
    p.add_argument(
        "--no-dicom-seg", action="store_true",
        help="skip OUTPUT/<case>/segmentation.dcm (DICOM-SEG, written for DICOM inputs; the DICOM SR needs it)",
    )
    p.add_argument(
        "--no-dicom-sr", action="store_true",
        help="skip OUTPUT/<case>/measurements.dcm (DICOM SR measurement report, written for DICOM inputs)",
    )
    p.add_argument(
        "--no-overview", action="store_true", help="skip OUTPUT/<case>/overview.png (report.html is still written)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_numeric_options(p: argparse.ArgumentParser, numeric) -> None:
    """Options given as ``(flag, type, default, help)`` rows, each help ending in its default."""
    for flag, kind, default, text in numeric:
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default:g})")


def _add_io_options(p: argparse.ArgumentParser, output_help: str) -> None:
    """``-o/--output``, ``--model`` and ``--device``, shared by every subcommand that runs a model."""
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument("--model", default=None, help="model checkpoint (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def _add_model_options(p: argparse.ArgumentParser, tta_help: str) -> None:
    """``--tta``, ``--temperature`` and ``--class-model``, shared by ``segment`` and ``predict-slices``."""
    p.add_argument("--tta", action="store_true", help=tta_help)
    _add_temperature_option(p)
    _add_class_model_option(p)


def _add_class_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class-model", default=None,
        help="GGO / consolidation head checkpoint (default: the shipped models/classes.pt)",
    )


def _add_temperature_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--temperature", type=float, default=None,
        help="probability = sigmoid(logit / T) (default: the model's calibrated value; 1 = raw sigmoid)",
    )


def _predict_slices_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="folder of 8-bit lung-windowed CT slices")
    _add_io_options(p, "output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    _add_model_options(p, "average with the left-right flipped slice (2x time)")
    p.add_argument(
        "--classes", action="store_true",
        help="also write OUTPUT_DIR/ggo/<stem>.png and OUTPUT_DIR/consolidation/<stem>.png (8-bit probabilities)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _calibrate_options(p: argparse.ArgumentParser) -> None:
    from infnet_monai.defaults import CALIBRATION_TEMPERATURES

    p.add_argument("images", help="folder of 8-bit slices (.jpg/.jpeg/.png)")
    p.add_argument("masks", help="folder of their infection masks, same name stems (> 128 is infection)")
    _add_io_options(p, "calibrated checkpoint to write (not the input model)")
    p.add_argument(
        "--temperatures", type=float, nargs="+", default=list(CALIBRATION_TEMPERATURES),
        help=f"values to try (default: {' '.join(f'{t:g}' for t in CALIBRATION_TEMPERATURES)})",
    )
    p.add_argument("--tolerance", type=float, default=0.005, help="mean-Dice slack for a larger T (default: 0.005)")


def _peer(need_port: bool):
    """An argparse type for ``AE@host[:port]`` whose error is the parser's message."""
    from infnet_monai.net.peers import parse_peer

    def parse(text: str):
        try:
            return parse_peer(text, need_port)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "AE@host:port" if need_port else "AE@host"
    return parse


def _ae_title(text: str) -> str:
    from infnet_monai.net.peers import check_ae_title

    try:
        return check_ae_title(text, "--ae-title")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_network_options(p: argparse.ArgumentParser) -> None:
    """``--ae-title``, ``--send-to`` and ``--spool``, shared by ``serve`` and the pull mode of ``segment``."""
    from infnet_monai.defaults import NODE_AE_TITLE

    p.add_argument("--ae-title", type=_ae_title, default=NODE_AE_TITLE, help=f"this node's AE title (default: {NODE_AE_TITLE})")
    p.add_argument(
        "--send-to", metavar="AE@host:port", type=_peer(True), action="append", default=[],
        help="send segmentation.dcm and measurements.dcm there by C-STORE (repeatable; default: nowhere)",
    )  # fmt: skip
    p.add_argument("--spool", default=None, help="spool folder, outside OUTPUT (default: OUTPUT.spool beside OUTPUT)")


def _segment_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", default=None, help="NIfTI file, DICOM series folder, or cohort folder (or --from-pacs)")
    _add_segment_options(p)
    p.add_argument("--save-prob", action="store_true", help="also write probability.nii.gz")
    p.add_argument("--resume", action="store_true", help="skip cases whose outputs are already complete")
    p.add_argument(
        "--pairs", metavar="CSV", default=None,
        help="follow-up comparisons for OUTPUT/followup.csv: a CSV with columns baseline_case_id,followup_case_id "
        "(default: the scans of each DICOM PatientID, in StudyDate order)",
    )  # fmt: skip
    p.add_argument(
        "--strict", action="store_true",
        help="paths passed over while looking for cases (hidden files, broken links, unreadable folders) become error "
        "rows (default: listed in the log)",
    )  # fmt: skip
    p.add_argument(
        "--from-pacs", metavar="AE@host:port", type=_peer(True), default=None,
        help="pull mode: retrieve the studies of --studies from this PACS (C-FIND, C-GET) instead of reading INPUT",
    )  # fmt: skip
    p.add_argument("--studies", metavar="FILE", default=None, help="with --from-pacs: one StudyInstanceUID or AccessionNumber a line")
    _add_network_options(p)


def _serve_options(p: argparse.ArgumentParser) -> None:
    from infnet_monai.defaults import (
        NODE_HOST, NODE_IDLE_SECONDS, NODE_MAX_SPOOL_GB, NODE_PORT, NODE_SEND_RETRIES, NODE_SERIES_TIMEOUT_S,
    )  # fmt: skip

    _add_segment_options(p)
    _add_network_options(p)
    p.add_argument("--host", default=NODE_HOST, help=f"address to listen on (default: {NODE_HOST}, loopback only)")
    p.add_argument("--port", type=int, default=NODE_PORT, help=f"TCP port (default: {NODE_PORT})")
    p.add_argument(
        "--allow", metavar="AE@host[:port]", type=_peer(False), action="append", required=True,
        help="a calling AE allowed to connect from that host (repeatable; every other association is refused); with "
        "a port, the results of what it sends also go back to it",
    )  # fmt: skip
    numeric = (  # flag, type, default, help
        ("--idle-seconds", float, NODE_IDLE_SECONDS, "a series is complete when no instance of it arrived for this long"),
        ("--series-timeout", float, NODE_SERIES_TIMEOUT_S, "seconds after its first instance when a series still receiving is set aside with an error row"),
        ("--max-spool-gb", float, NODE_MAX_SPOOL_GB, "bound of the spool; past it, new associations are refused (out of resources)"),
        ("--send-retries", int, NODE_SEND_RETRIES, "tries per result before it waits in the outbox for later and the next start"),
    )
    _add_numeric_options(p, numeric)


def _demo_options(p: argparse.ArgumentParser) -> None:
    _add_segment_options(p)
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default: 0)")


# name, one-line help, options; the description under ``COMMAND --help`` is the command function's docstring
COMMANDS = (
    ("predict-slices", _cmd_predict_slices, _predict_slices_options,
     "probability PNGs for a folder of 2D CT slices (.jpg/.jpeg/.png)"),
    ("calibrate", _cmd_calibrate, _calibrate_options,
     "choose a model's probability temperature on labeled slices and write a calibrated copy"),
    ("segment", _cmd_segment, _segment_command_options,
     "infection and lung masks plus burden statistics for CT volumes (NIfTI / DICOM, file or cohort folder)"),
    ("serve", _cmd_serve, _serve_options,
     "DICOM node: receive CT series (C-STORE), segment each, send the DICOM-SEG and SR back"),
    ("demo", _cmd_demo, _demo_options, "run the whole pipeline on a generated chest CT phantom (no data needed)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infnet-covid",
        description="COVID-19 lung infection segmentation in chest CT with Inf-Net (MONAI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func, add_options, summary in COMMANDS:
        p = sub.add_parser(name, help=summary, description=" ".join((func.__doc__ or summary).split()))
        add_options(p)
        # also after the command (infnet-covid segment ... -v); SUPPRESS keeps a -v given before it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, third-party lines included")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # -q: nothing on stderr but errors (Python warnings go through logging, so -q silences them too)
    level = logging.DEBUG if args.verbose else logging.ERROR if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    logging.getLogger("highdicom").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # MONAI says once per DICOM case that an optional GPU decoder is missing; pydicom decodes without it
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be >= 1")
    from infnet_monai.utils.preflight import OutputLockedError

    try:
        return args.func(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, PermissionError) as e:
        # usage-level problems: bad paths, bad options, unusable model
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # the output could not be written (e.g. the disk filled up while writing burden.csv): no traceback
        hint = " Free space, then rerun with --resume." if e.errno == errno.ENOSPC else " Rerun with --resume."
        print(f"error: {e}.{hint}", file=sys.stderr)
        return EXIT_ABORTED
    except OutputLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - cases never get here (each ends as a row); the run itself could not go on
        from infnet_monai.io.checkpoint import CheckpointError  # imported by then: no cost
        from infnet_monai.pipeline.runner import one_line

        if isinstance(e, CheckpointError):  # an unusable model is a usage error
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        logging.getLogger("infnet_monai").debug("the run stopped", exc_info=True)
        print(f"error: the run stopped: {one_line(f'{type(e).__name__}: {e}', 600)} (-v shows the traceback); "
              "rerun with --resume.", file=sys.stderr)  # fmt: skip
        return EXIT_ABORTED


if __name__ == "__main__":
    sys.exit(main())
