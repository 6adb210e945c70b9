#!/usr/bin/env python
"""3D accuracy of ``infnet-covid segment`` on the development data, with every gate chosen leave-one-scan-out.

Prints JSON, then (``--markdown``) tables. What it measures, through the real pipeline
(:class:`infnet_monai.pipeline.CTSegmenter`: the network runs once per scan, :meth:`~CTSegmenter.prepare`, and each
setting of the lesion gates finishes a copy, :meth:`~CTSegmenter.finish`):

- **rebuilt**: the labeled validation slices (seeded split) rebuilt as CT volumes
  (:func:`infnet_monai.data.rebuild.slice_to_volume`). Infection Dice against the radiologist's mask (mean over
  slices), the share of the true infection inside the lung mask (mean and worst slice), the median burden error.
- **p001**: the real COVID-19 CT ``covid_ct_md_P001``: slice agreement, sensitivity and specificity against the
  radiologists' slice labels (a slice is infected when it holds any infection voxel), and per lobe the share of the
  slices labelled for it whose lung (left or right) holds infection.
- **normal** (``covid_ct_md_normal001``), **lidc** (``lidc_idri_0001``, nodules, no COVID-19), **cancer**
  (``lung_pet_ct_dx_A0001_chest_5mm``) and **abdomen** (``abdomen_3mm``, lung bases): the infection found on scans
  without COVID-19 (% of lung, mL, lesions), the nodule-like lesions reported apart, and for the abdomen the lung
  Dice against its reference mask.
- the anatomical self-checks of every real scan: the share of the tracheal air column inside the lung mask and the
  infection outside the bony thorax (:mod:`infnet_monai.stats.anatomy`); and the organ domes in the final lung mask
  (``domes_in_lung_ml``): the open holes that the Hounsfield-unit lung leaves out (the liver or spleen dome seen as
  an island in the lung base) but a later step put back.

**Leave-one-scan-out** (``--loso``): the lesion gates (``basal_rim_max_share`` and ``min_lesion_extent_mm``, the
grid :data:`GRID`) are chosen on all items but one, and the held-out item's figure is reported from that choice,
next to its figure at the shipped setting and at the setting chosen on all items. The choice maximises the mean
sensitivity figure of the COVID-19 items (rebuilt Dice, P001's per-lung slice agreement: each lung against its
lobes' labels, so a lung's lesions lost or infection in the wrong lung count) minus the mean false infection (in %
of the lung) of the scans without COVID-19 (1% of false burden weighs as much as a Dice of 1: a false burden of 0.3-3%
is the size of mild disease); ties go to the setting nearest the shipped one. **Holes** (``--holes``): the open holes
of each scan's lung (domes and hilar vessels, :func:`~infnet_monai.postprocessing.morphology.fill_enclosed_holes`)
with their in-plane areas, and the dome threshold chosen in the gap of the other scans. ``--grid`` compares other
values of a gate, or the in-plane area gate or the through-plane window too (not in :data:`GRID`):

    python scripts/evaluate_3d.py --loso --grid basal_rim_max_share=0.3,0.5,1.1 min_lesion_extent_mm=15,20,25,30 \
        min_lesion_area_mm2=25,50,100,200
    python scripts/evaluate_3d.py --loso --grid through_plane_mm=0,6,10 --thick --markdown
    python scripts/evaluate_3d.py --loso --thick --grid basal_rim_max_share=0.5 min_lesion_extent_mm=15,20,25,30 \
        min_lesion_depth_mm=0,4,8,12 --markdown

``--thick`` adds the development scans thinned to every second slice (:data:`THICK`), each held out with its source
scan.

    python scripts/evaluate_3d.py --markdown
    python scripts/evaluate_3d.py --loso --holes --markdown
    python scripts/evaluate_3d.py --only rebuilt --split all

**Merging folds** (``--merge``): when the model itself was trained leave-one-scan-out (the hard negatives of
``configs/train_negatives.json``), each scan is run with ``--loso`` by the model of the fold that held it out, and
``--merge`` chooses the gates leave-one-scan-out on those figures:

    python scripts/evaluate_3d.py --model runs/loso/foldA/model.pt --only p001 lidc --loso > a.json
    python scripts/evaluate_3d.py --merge a.json b.json rebuilt.json --markdown
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

from infnet_monai.data.paths import DEVELOPMENT_SCANS, shared_data_dir
from infnet_monai.metrics.paper import mask_dice

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = shared_data_dir()
SCANS = {name: DEVELOPMENT_SCANS[name] for name in ("p001", "normal", "lidc", "cancer", "abdomen")}
THICK = {"p001_4mm": ("p001", 2), "lidc_5mm": ("lidc", 2), "normal_4mm": ("normal", 2)}
"""``--thick``: items made of every second axial slice of a development scan (4-5 mm apart), so that a setting in
millimetres that acts differently on thick slices (the through-plane window) is chosen on more than one scan with
thick slices. Each is held out together with the scan it comes from (one patient, one fold)."""
BASE_PARTS = ("rebuilt", *SCANS)
PARTS = (*BASE_PARTS, *THICK)
COVID = ("rebuilt", "p001", "p001_4mm")
LOBES = ("LLL", "LUL", "RLL", "RML", "RUL")
"""The lobe columns of P001's slice labels; the first letter is the lung (left, right)."""
GRID = {"basal_rim_max_share": (0.3, 0.5, 0.7, 1.1), "min_lesion_extent_mm": (10.0, 15.0, 20.0, 25.0, 30.0)}
"""The lesion gates compared leave-one-scan-out (``basal_rim_max_share`` 1.1 switches the basal-rim rule off)."""


def _copy(data: dict) -> dict:
    """A copy of a prepared case that a post-processing chain may consume."""
    import copy

    import torch

    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in data.items()}


GATES = ("basal_rim_max_share", "min_lesion_extent_mm", "min_lesion_area_mm2", "through_plane_mm", "min_lesion_depth_mm")
"""The gates ``--grid`` may set (keyword arguments of the post-processing and fields of ``SegmentConfig``)."""


def _parse_grid(items: list[str], ap: argparse.ArgumentParser) -> dict[str, tuple[float, ...]]:
    """``["GATE=V1,V2", ...]`` -> ``{GATE: (V1, V2)}``; an unknown gate or a value that is no number is a usage error."""
    out = {}
    for item in items:
        gate, _, values = item.partition("=")
        if gate not in GATES:
            ap.error(f"--grid: unknown gate {gate!r} in {item!r}; one of {', '.join(GATES)}")
        try:
            out[gate] = tuple(float(v) for v in values.split(","))
        except ValueError:
            ap.error(f"--grid: {item!r} must be GATE=V1,V2,... with numbers")
    return out


def _settings(grid: dict | None = None) -> list[dict]:
    grid = GRID if grid is None else grid
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _key(setting: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in setting.items())


def _finish(seg, data: dict, setting: dict, anatomy: bool):
    from infnet_monai.pipeline.components import ct_postprocessing

    cfg = seg.config
    gates = {
        "min_lesion_area_mm2": cfg.min_lesion_area_mm2, "through_plane_mm": cfg.through_plane_mm,
        "min_lesion_depth_mm": cfg.min_lesion_depth_mm, **setting,
    }
    chain = ct_postprocessing(
        seg.predictor.volume_preprocessing, threshold=cfg.threshold, extension_threshold=cfg.extension_threshold,
        min_lesion_volume_mm3=cfg.min_lesion_volume_mm3, anatomy_checks=anatomy, **gates,
    )
    return seg.finish(_copy(data), postprocessing=chain)


def _p001_agreement(result, labels_csv: Path, kept_only: bool = False) -> dict:
    """P001's figures against the radiologists' slice labels; ``kept_only``: only the labelled slices the mask's grid
    holds (within a quarter of its spacing), for a thinned scan (:data:`THICK`)."""
    import numpy as np

    with open(labels_csv, newline="") as f:
        labels = list(csv.DictReader(f))
    affine, inf = result.affine, np.asarray(result.infection) > 0
    axial = int(np.argmax(np.abs(affine[2, :3])))
    others = tuple(a for a in range(3) if a != axial)
    per_index = inf.any(axis=others)
    lung = np.asarray(result.lung)
    per_side = {side: (inf & (lung == value)).any(axis=others) for side, value in (("R", 1), ("L", 2))}
    z_of_index = affine[2, 3] + affine[2, axial] * np.arange(inf.shape[axial])
    pred, truth, lobes, side_pred, side_truth = [], [], {}, [], []
    for lab in labels:
        z = float(lab["image_position_z_mm"])
        k = int(np.argmin(np.abs(z_of_index - z)))
        if kept_only and abs(z_of_index[k] - z) > 0.25 * abs(affine[2, axial]):
            continue
        if abs(z_of_index[k] - z) > 0.5 * abs(affine[2, axial]):
            raise RuntimeError(f"{labels_csv}: no slice of the mask at z = {z} mm")
        pred.append(bool(per_index[k]))
        truth.append(lab["infected"] == "1")
        for side in ("R", "L"):  # each lung on its own: infected when one of its lobes is labelled
            side_pred.append(bool(per_side[side][k]))
            side_truth.append(any(lab.get(lobe) == "1" for lobe in LOBES if lobe[0] == side))
        for lobe in LOBES:
            if lab.get(lobe) == "1":  # a slice labelled for this lobe: found when its lung holds infection there
                lobes.setdefault(lobe, []).append(bool(per_side[lobe[0]][k]))
    p, t = np.array(pred), np.array(truth)
    sp, st = np.array(side_pred), np.array(side_truth)
    return {
        "agreement": float((p == t).mean()),
        "sensitivity": float((p & t).sum() / max(t.sum(), 1)),
        "specificity": float((~p & ~t).sum() / max((~t).sum(), 1)),
        "lung_agreement": float((sp == st).mean()),
        "lung_sensitivity": float((sp & st).sum() / max(st.sum(), 1)),
        "lung_specificity": float((~sp & ~st).sum() / max((~st).sum(), 1)),
        "lobe_slice_sensitivity": {lobe: round(float(np.mean(found)), 3) for lobe, found in sorted(lobes.items())},
    }


def _scan_figures(name: str, result, data_dir: Path) -> dict:
    import nibabel as nib

    row = result.row
    out = {k: row.get(k) for k in ("infection_percent", "infection_volume_ml", "lesion_count", "lung_volume_ml", "nodule_like_lesion_count", "nodule_like_volume_ml", "trachea_in_lung_percent", "infection_outside_thorax_ml", "band_like_infection_ml", "qc_flags") if k in row}
    if _patient(name) == "p001":  # P001 or a thinned copy of it (only the labelled slices it keeps)
        out.update(_p001_agreement(result, data_dir / "ct" / "covid_ct_md_P001_slice_labels.csv", name in THICK))
    if name == "abdomen":
        ref = nib.load(str(data_dir / "ct" / "abdomen_3mm_lung.nii.gz"))
        out["lung_dice"] = mask_dice(result.lung, ref.dataobj)
    return out


def evaluate_scan(seg, name: str, data_dir: Path, settings: list[dict], default: dict) -> dict:
    """Figures of one real scan at every setting (the self-checks at the shipped one)."""
    from infnet_monai.io.cases import discover_cases

    t0 = time.perf_counter()
    source, step = THICK.get(name, (name, 1))
    case = discover_cases(data_dir / "ct" / SCANS[source])[0]
    data = seg.prepare(case if step == 1 else _thinned(case, step))
    per, domes_ml = {}, None
    for setting in settings:
        result = _finish(seg, data, setting, anatomy=setting == default)
        per[_key(setting)] = _scan_figures(name, result, data_dir)
        if setting == default:
            domes_ml = _domes_in_lung_ml(data, result)
    return {"per_setting": per, "domes_in_lung_ml": domes_ml, "seconds": round(time.perf_counter() - t0, 1)}


def _thinned(case, step: int):
    """The scan of ``case`` in Hounsfield units with every ``step``-th axial slice only (its affine follows)."""
    import numpy as np
    import torch
    from monai.data import MetaTensor

    from infnet_monai.transforms import LoadCTd

    image = LoadCTd("image")({"image": case})["image"]
    affine = np.array(image.affine, dtype=np.float64)
    axial = int(np.argmax(np.abs(affine[2, :3])))
    index = [slice(None)] * 4
    index[axial + 1] = slice(None, None, step)
    affine[:3, axial] *= step
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(np.asarray(image)[tuple(index)])), affine=torch.as_tensor(affine))


def _domes_in_lung_ml(data: dict, result) -> float:
    """mL of the organ domes that the Hounsfield-unit lung leaves out (the open holes of at least the dome area,
    :func:`~infnet_monai.postprocessing.morphology.fill_enclosed_holes`) found inside the case's final lung mask: what
    the steps after the lung mask (the extension) put back."""
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    from infnet_monai.postprocessing.lung import lung_holes

    hu_lung = np.asarray(data["lung"])[0]
    spacing = [float(s) for s in data["image"].pixdim[:3]]
    domes = np.zeros(hu_lung.shape, dtype=bool)
    for _, box, _, open_holes in lung_holes(hu_lung, spacing):
        domes[box] |= open_holes
    final = Orientation(axcodes="RAS")(MetaTensor(torch.as_tensor(np.asarray(result.lung)[None]), affine=torch.as_tensor(result.affine)))
    final = np.asarray(final)[0]
    if final.shape != domes.shape:
        raise RuntimeError(f"final lung {final.shape} and prepared lung {domes.shape} differ in shape")
    return round(float((domes & (final > 0)).sum() * np.prod(spacing) / 1000.0), 2)


def evaluate_rebuilt(seg, data_dir: Path, split: str, settings: list[dict]) -> dict:
    """The chosen labeled slices rebuilt as CT, at every setting."""
    import numpy as np
    from monai.data import MetaTensor
    from PIL import Image

    import torch

    from infnet_monai.data import labeled_splits
    from infnet_monai.data.rebuild import slice_to_volume

    splits = labeled_splits(data_dir)
    items = splits["validation"] if split == "validation" else splits["train"] if split == "train" else splits["train"] + splits["validation"]
    t0 = time.perf_counter()
    scores: dict[str, list] = {_key(s): [] for s in settings}
    for item in items:
        grey = np.array(Image.open(item["image"]).convert("L"))
        truth = np.array(Image.open(item["label"]).convert("L")) > 127
        vol = slice_to_volume(grey, truth)
        image = MetaTensor(torch.from_numpy(vol.volume_hu[None]), affine=torch.as_tensor(vol.affine))
        data = seg.prepare(image)
        for setting in settings:
            result = _finish(seg, data, setting, anatomy=False)
            n_true = int(vol.mask.sum())
            scores[_key(setting)].append(
                (
                    mask_dice(result.infection, vol.mask),
                    float((vol.mask.astype(bool) & (result.lung > 0)).sum() / n_true) if n_true else 1.0,
                    float((result.infection > 0).sum() / n_true - 1.0) if n_true else float("nan"),
                )
            )
    per = {}
    for key, rows in scores.items():
        arr = np.array(rows)
        per[key] = {
            "dice": float(arr[:, 0].mean()),
            "inside_lung_mean": float(arr[:, 1].mean()),
            "inside_lung_min": float(arr[:, 1].min()),
            "burden_error_median": float(np.nanmedian(arr[:, 2])),
        }
    return {"split": split, "cases": len(items), "per_setting": per, "seconds": round(time.perf_counter() - t0, 1)}


def _score(item: str, figures: dict) -> float:
    """The item's figure for the choice: sensitivity of a COVID-19 item, minus the false % of the others."""
    if item == "rebuilt":
        return figures["dice"]
    if _patient(item) == "p001":  # per lung (issue 31): infection in the wrong lung, or a lung's lesions lost
        return figures.get("lung_agreement", figures["agreement"])
    pct = figures.get("infection_percent")
    return -(pct if pct == pct and pct is not None else 0.0)


def choose(results: dict, items: list[str], settings: list[dict], default: dict) -> dict:
    """The setting with the best objective on ``items`` (module docstring); ties go to the one nearest ``default``."""
    def objective(setting: dict) -> float:
        key = _key(setting)
        covid = [_score(i, results[i]["per_setting"][key]) for i in items if i in COVID]
        other = [_score(i, results[i]["per_setting"][key]) for i in items if i not in COVID]
        return (sum(covid) / len(covid) if covid else 0.0) + (sum(other) / len(other) if other else 0.0)

    values = {k: sorted({s[k] for s in settings}) for k in default}  # the grid the settings span

    def distance(setting: dict) -> int:  # grid steps from the shipped setting
        return sum(abs(values[k].index(setting[k]) - values[k].index(default[k])) for k in values if default[k] in values[k])

    best = max(objective(s) for s in settings)
    tied = [s for s in settings if objective(s) >= best - 1e-9]
    return min(tied, key=distance)


def _patient(item: str) -> str:
    return THICK.get(item, (item, 1))[0]


def leave_one_out(results: dict, settings: list[dict], default: dict) -> dict:
    """Each item's figure at the setting chosen without it and without the other items of its patient
    (:data:`THICK`)."""
    items = list(results)
    out = {"chosen_on_all": choose(results, items, settings, default), "held_out": {}}
    for held in items:
        chosen = choose(results, [i for i in items if _patient(i) != _patient(held)], settings, default)
        per = results[held]["per_setting"]
        out["held_out"][held] = {
            "chosen": chosen,
            "held_out_figures": per[_key(chosen)],
            "shipped_figures": per[_key(default)],
        }
    return out


def merge(paths: list[Path]) -> dict:
    """The items of several ``--loso`` outputs in one result, with the gates chosen leave-one-scan-out on them.

    Each item must come from one file only, and every file must hold the same settings and shipped setting."""
    result: dict = {"models": {}}
    for path in paths:
        part = json.loads(Path(path).read_text())
        if "shipped_setting" in result and part["shipped_setting"] != result["shipped_setting"]:
            raise SystemExit(f"{path}: shipped setting {part['shipped_setting']} differs from {result['shipped_setting']}")
        result["shipped_setting"] = part["shipped_setting"]
        result["grid"] = part.get("grid", GRID)
        for item in PARTS:
            if item in part:
                if item in result:
                    raise SystemExit(f"{path}: item '{item}' is already given by {result['models'][item]}")
                if len(part[item]["per_setting"]) < len(_settings(part.get("grid", GRID))):
                    raise SystemExit(f"{path}: item '{item}' was not run with --loso")
                result[item] = part[item]
                result["models"][item] = f"{part['model']} ({path})"
    default = result["shipped_setting"]
    result["loso"] = leave_one_out({k: result[k] for k in PARTS if k in result}, _settings(result["grid"]), default)
    return result


def hole_table(data_dir: Path) -> dict:
    """Open holes of each scan's lung (domes and hilar vessels), and the dome threshold chosen in the gap of the
    other scans (the midpoint between their largest open vessel and their smallest dome)."""
    import numpy as np
    from scipy import ndimage as ndi

    from infnet_monai.io.volume import load_ct
    from infnet_monai.io.cases import discover_cases
    from infnet_monai.postprocessing import DOME_MIN_AREA_MM2, lung_mask
    from monai.transforms import Orientation

    table = {}
    for name in ("p001", "normal", "lidc", "cancer"):
        image = Orientation(axcodes="RAS")(load_ct(discover_cases(data_dir / "ct" / SCANS[name])[0]))
        hu, spacing = image[0].numpy(), [float(s) for s in image.pixdim[:3]]
        fill_all = lung_mask(hu, spacing, dome_min_area_mm2=float("inf")) > 0
        fill_closed = lung_mask(hu, spacing, dome_min_area_mm2=0.0) > 0
        shipped = lung_mask(hu, spacing) > 0
        labels, n = ndi.label(fill_all & ~fill_closed, structure=np.ones((3, 3, 3)))
        holes = []
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            comp = labels[sl] == i
            area_cm2 = comp.sum(axis=(0, 1)).max() * spacing[0] * spacing[1] / 100.0
            volume_ml = comp.sum() * float(np.prod(spacing)) / 1000.0
            if volume_ml >= 0.1:
                holes.append({"area_cm2": round(float(area_cm2), 2), "volume_ml": round(float(volume_ml), 2), "filled": bool(shipped[sl][comp].mean() > 0.5)})
        table[name] = sorted(holes, key=lambda h: -h["area_cm2"])
    # a dome is an unfilled hole at the shipped threshold; leave-one-out threshold from the other scans' gap
    out = {"shipped_cm2": DOME_MIN_AREA_MM2 / 100.0, "scans": table, "held_out": {}}
    for held in table:
        others = [h for k, v in table.items() if k != held for h in v]
        vessels = [h["area_cm2"] for h in others if h["filled"]]
        domes = [h["area_cm2"] for h in others if not h["filled"]]
        cut = 0.5 * (max(vessels, default=0.0) + min(domes, default=2 * max(vessels, default=1.0)))
        same = all((h["area_cm2"] >= cut) == (not h["filled"]) for h in table[held])
        out["held_out"][held] = {"threshold_cm2": round(cut, 2), "same_decisions_as_shipped": same}
    return out


def markdown(result: dict, default_key: str) -> str:
    def f(v, digits=3):
        return "-" if v is None or v != v else f"{v:.{digits}f}"

    lines = ["| item | figure | shipped setting | held-out choice (its setting) |", "| --- | --- | --- | --- |"]
    loso = result.get("loso", {}).get("held_out", {})
    for item in PARTS:
        if item not in result:
            continue
        shipped = result[item]["per_setting"][default_key]
        held = loso.get(item)
        if item == "rebuilt":
            name, fig = "infection Dice", "dice"
        elif _patient(item) == "p001":
            name, fig = "per-lung slice agreement", "lung_agreement"
        else:
            name, fig = "false infection %", "infection_percent"
        held_cell = f"{f(held['held_out_figures'].get(fig))} ({_key(held['chosen'])})" if held else "-"
        lines.append(f"| {item} | {name} | {f(shipped.get(fig))} | {held_cell} |")
    lines += ["", "| scan | infection mL (lesions) | nodule-like (mL) | trachea in lung % | infection outside the bony thorax mL | organ domes in the lung mL | flags |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for item in (*SCANS, *THICK):
        if item in result:
            s = result[item]["per_setting"][default_key]
            lines.append(
                f"| {item} | {f(s.get('infection_volume_ml'), 1)} ({s.get('lesion_count')}) | {s.get('nodule_like_lesion_count')} "
                f"({f(s.get('nodule_like_volume_ml'), 1)}) | {f(s.get('trachea_in_lung_percent'), 1)} | "
                f"{f(s.get('infection_outside_thorax_ml'), 2)} | {f(result[item].get('domes_in_lung_ml'), 1)} | "
                f"{';'.join(s.get('qc_flags') or []) or '-'} |"
            )
    if "rebuilt" in result:
        r = result["rebuilt"]["per_setting"][default_key]
        lines += ["", f"rebuilt ({result['rebuilt']['split']}, {result['rebuilt']['cases']} slices): Dice {f(r['dice'])}, "
                  f"true infection inside the lung {f(r['inside_lung_mean'])} (worst {f(r['inside_lung_min'])}), "
                  f"median burden error {100 * r['burden_error_median']:+.0f}%"]
    if "p001" in result:
        p = result["p001"]["per_setting"][default_key]
        lobes = ", ".join(f"{k} {f(v, 2)}" for k, v in p.get("lobe_slice_sensitivity", {}).items())
        lines.append(
            f"P001: agreement {f(p['agreement'])} (sensitivity {f(p['sensitivity'], 2)}, specificity "
            f"{f(p['specificity'], 2)}); per lung {f(p.get('lung_agreement'))} (sensitivity "
            f"{f(p.get('lung_sensitivity'), 2)}, specificity {f(p.get('lung_specificity'), 2)}); labelled slices of "
            f"each lobe found in its lung: {lobes}"
        )
    if "abdomen" in result:
        lines.append(f"abdomen_3mm lung Dice {f(result['abdomen']['per_setting'][default_key].get('lung_dice'))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default ../shared/data)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--split", choices=("validation", "train", "all"), default="validation")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(BASE_PARTS))
    ap.add_argument(
        "--thick", action="store_true",
        help=f"also the thinned scans ({', '.join(THICK)}: every second slice), each held out with its source scan",
    )
    ap.add_argument("--loso", action="store_true", help="compare the lesion gates (GRID) and choose them leave-one-scan-out")
    ap.add_argument(
        "--grid", nargs="+", default=None, metavar="GATE=V1,V2,...",
        help=f"with --loso, compare these values of a gate instead of GRID's ({', '.join(GATES)}; "
        "the last three are not in GRID); the shipped value is always added",
    )
    ap.add_argument("--holes", action="store_true", help="the open holes of each lung and the dome threshold, leave-one-out")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--max-slice-gap-mm", type=float, default=None,
        help="run the network with this opt-in z-subsampling (as segment --max-slice-gap-mm), to see what it costs",
    )
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument(
        "--merge", nargs="+", type=Path, default=None,
        help="no run: merge the items of earlier --loso outputs (each item from one file, e.g. each scan from the "
        "model of the fold that held its negatives out) and choose the gates leave-one-scan-out on them",
    )
    args = ap.parse_args(argv)
    if args.merge:
        result = merge(args.merge)
        print(json.dumps(result, indent=1, default=str))
        if args.markdown:
            print(markdown(result, _key(result["shipped_setting"])))
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from infnet_monai.pipeline import CTSegmenter

    seg = CTSegmenter(
        args.model, device=args.device, overview=False, dicom_seg=False, max_slice_gap_mm=args.max_slice_gap_mm
    )
    default = {"basal_rim_max_share": seg.config.basal_rim_max_share, "min_lesion_extent_mm": seg.config.min_lesion_extent_mm}
    grid = dict(GRID)
    for gate, values in _parse_grid(args.grid or [], ap).items():
        default[gate] = float(getattr(seg.config, gate))
        grid[gate] = tuple(sorted({*values, default[gate]}))
    settings = _settings(grid) if args.loso else [default]
    if default not in settings:
        settings.append(default)
    result: dict = {"model": str(seg.model_path), "shipped_setting": default, "grid": grid}
    if args.max_slice_gap_mm is not None:
        result["max_slice_gap_mm"] = args.max_slice_gap_mm
    if "rebuilt" in args.only:
        result["rebuilt"] = evaluate_rebuilt(seg, args.data, args.split, settings)
    for name in (*SCANS, *THICK):
        if name in args.only or (args.thick and name in THICK):
            result[name] = evaluate_scan(seg, name, args.data, settings, default)
    if args.loso:
        result["loso"] = leave_one_out({k: result[k] for k in PARTS if k in result}, settings, default)
    if args.holes:
        result["holes"] = hole_table(args.data)
    print(json.dumps(result, indent=1, default=str))
    if args.markdown:
        print(markdown(result, _key(default)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
