"""``predict-slices``: a folder of 2D CT slice images in, one 8-bit probability PNG per slice out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from infnet_monai.data.covid_semiseg import IMAGE_SUFFIXES
from infnet_monai.inferers.slices import SlicePredictor
from infnet_monai.io.slices import read_slice, write_png_atomic
from infnet_monai.networks.nets.classes import CLASS_NAMES

__all__ = ["SliceFolderReport", "predict_slice_folder"]

logger = logging.getLogger(__name__)


@dataclass
class SliceFolderReport:
    """Outcome of :func:`predict_slice_folder`: written files and failures (path, message)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def predict_slice_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 8,
    flip_tta: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    temperature: float | None = None,
    classes: bool = False,
    class_model_path: str | os.PathLike | None = None,
) -> SliceFolderReport:
    """Write ``output_dir/<stem>.png`` (8-bit probability, input height and width) for each slice in ``input_dir``.

    With ``classes=True`` also ``output_dir/ggo/<stem>.png`` and ``output_dir/consolidation/<stem>.png``, the GGO and
    consolidation probabilities of the head ``class_model_path`` (default: the shipped one); they add up to the
    infection map (up to 8-bit rounding).

    Inputs are the ``.jpg``, ``.jpeg`` and ``.png`` files directly in ``input_dir`` (sorted). A file that cannot be
    read is reported in the result and logged; the others are still processed. Outputs are written atomically.
    ``temperature`` overrides the checkpoint's logit temperature and ``flip_tta`` averages with the left-right
    mirrored slice (see :class:`~infnet_monai.inferers.SlicePredictor`).

    Raises:
        NotADirectoryError: ``input_dir`` is not a folder.
        ValueError: ``output_dir`` is ``input_dir`` itself (inputs would be overwritten).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise NotADirectoryError(f"input folder '{input_dir}' does not exist or is not a folder.")
    if output_dir.resolve() == input_dir.resolve():
        raise ValueError(f"output folder '{output_dir}' is the input folder; choose another so no input is overwritten.")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems: dict[str, Path] = {}
    report = SliceFolderReport()
    for p in files:
        if p.stem in stems:
            report.failed.append((p, f"'{p}' has the same name stem as '{stems[p.stem]}'; both would write {p.stem}.png."))
        else:
            stems[p.stem] = p
    files = [p for p in files if stems.get(p.stem) == p]
    if not files:
        logger.warning("no .jpg/.jpeg/.png images in '%s'", input_dir)
        return report
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = SlicePredictor(model_path, device=device, flip_tta=flip_tta, temperature=temperature)
    if classes:
        predictor.with_classes(class_model_path)
        for name in CLASS_NAMES[1:]:
            (output_dir / name).mkdir(exist_ok=True)
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    for chunk in progress(batches) if progress is not None else batches:
        images, paths = [], []
        for p in chunk:
            try:
                images.append(read_slice(p))
                paths.append(p)
            except ValueError as e:
                logger.error("%s", e)
                report.failed.append((p, str(e)))
        for p, prob in zip(paths, predictor.predict_uint8(images, classes=classes)):
            out = output_dir / f"{p.stem}.png"
            if classes:
                for name, class_prob in zip(CLASS_NAMES[1:], prob[1:]):
                    write_png_atomic(class_prob, output_dir / name / f"{p.stem}.png")
                prob = prob[0]
            write_png_atomic(prob, out)
            report.written.append(out)
    return report
