"""scripts/evaluate_3d.py --merge: each item from the fold that held it out, the gates chosen leave-one-scan-out."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("evaluate_3d", REPO / "scripts" / "evaluate_3d.py")
evaluate_3d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate_3d)

SHIPPED = {"basal_rim_max_share": 0.5, "min_lesion_extent_mm": 25.0}


def _figures(item: str, setting: dict) -> dict:
    extent = setting["min_lesion_extent_mm"]
    if item == "rebuilt":
        return {"dice": 0.75}
    if item == "p001":  # small extents find more of the COVID-19 scan
        return {"agreement": 0.95 if extent <= 15 else 0.85}
    return {"infection_percent": 0.0 if extent >= 15 else 0.5}  # and fire on the scans without it below 15 mm


def _write(path: Path, model: str, items: list[str], loso: bool = True) -> Path:
    settings = evaluate_3d._settings() if loso else [SHIPPED]
    out = {"model": model, "shipped_setting": SHIPPED}
    for item in items:
        out[item] = {"per_setting": {evaluate_3d._key(s): _figures(item, s) for s in settings}}
    path.write_text(json.dumps(out))
    return path


def test_merge_takes_each_item_from_its_fold_and_chooses_leave_one_out(tmp_path):
    a = _write(tmp_path / "a.json", "foldA.pt", ["rebuilt", "p001"])
    b = _write(tmp_path / "b.json", "foldB.pt", ["normal", "lidc"])
    result = evaluate_3d.merge([a, b])
    assert result["models"]["p001"].startswith("foldA.pt") and result["models"]["lidc"].startswith("foldB.pt")
    held = result["loso"]["held_out"]
    # without p001 nothing rewards a small extent: the nearest setting to the shipped one among the ties
    assert held["p001"]["chosen"]["min_lesion_extent_mm"] == 25.0 and held["p001"]["held_out_figures"]["agreement"] == 0.85
    # with p001 the 15 mm extent wins (P001 gains, the scans without COVID-19 stay at 0)
    assert held["lidc"]["chosen"]["min_lesion_extent_mm"] == 15.0


def test_merge_refuses_an_item_given_twice_or_not_run_with_loso(tmp_path):
    a = _write(tmp_path / "a.json", "foldA.pt", ["p001"])
    with pytest.raises(SystemExit, match="already given"):
        evaluate_3d.merge([a, _write(tmp_path / "b.json", "foldB.pt", ["p001"])])
    with pytest.raises(SystemExit, match="not run with --loso"):
        evaluate_3d.merge([a, _write(tmp_path / "c.json", "foldB.pt", ["lidc"], loso=False)])


def test_a_third_gate_in_the_grid_is_chosen_and_merged(tmp_path):
    """``--grid`` adds the in-plane area gate: settings, the tie-break towards the shipped setting and --merge follow
    the grid the files were run with."""
    import argparse

    ap = argparse.ArgumentParser()
    grid = {**evaluate_3d.GRID, **evaluate_3d._parse_grid(["min_lesion_area_mm2=50,100,200"], ap)}
    shipped = {**SHIPPED, "min_lesion_area_mm2": 100.0}
    settings = evaluate_3d._settings(grid)
    assert len(settings) == 4 * 5 * 3 and shipped in settings

    def figures(item, s):  # a larger area gate clears the scans without COVID-19 at 10 mm; nothing else matters
        f = _figures(item, s)
        if item not in ("rebuilt", "p001") and s["min_lesion_area_mm2"] >= 200:
            f = {"infection_percent": 0.0}
        return f

    out = {"model": "m.pt", "shipped_setting": shipped, "grid": grid}
    for item in ("rebuilt", "p001", "normal", "lidc"):
        out[item] = {"per_setting": {evaluate_3d._key(s): figures(item, s) for s in settings}}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(out))
    result = evaluate_3d.merge([path])
    # with p001, 10-15 mm find more of it; at 10 mm only the 2 cm2 area keeps the other scans clean, and the
    # nearest tie to the shipped setting is 15 mm at the shipped area
    chosen = result["loso"]["chosen_on_all"]
    assert chosen == {"basal_rim_max_share": 0.5, "min_lesion_extent_mm": 15.0, "min_lesion_area_mm2": 100.0}
    with pytest.raises(SystemExit):
        evaluate_3d._parse_grid(["min_lesion_area=1"], ap)
    with pytest.raises(SystemExit):
        evaluate_3d._parse_grid(["min_lesion_area_mm2=1,x"], ap)


def test_the_scans_are_run_with_the_z_subsampling_asked_for(monkeypatch, capsys):
    """``--max-slice-gap-mm`` reaches the segmenter and the output says so (what the option costs is measured with
    it, docs/performance.md)."""
    import infnet_monai.pipeline as pipeline

    made = []

    class Segmenter:
        def __init__(self, *args, **options):
            made.append(options)
            from infnet_monai.pipeline.segment import SegmentConfig

            self.config = SegmentConfig()
            self.model_path = "model.pt"

    monkeypatch.setattr(pipeline, "CTSegmenter", Segmenter)
    monkeypatch.setattr(evaluate_3d, "evaluate_scan", lambda seg, name, data, settings, default: {"per_setting": {}})
    assert evaluate_3d.main(["--only", "lidc", "--max-slice-gap-mm", "5"]) == 0
    assert made[0]["max_slice_gap_mm"] == 5.0
    assert json.loads(capsys.readouterr().out)["max_slice_gap_mm"] == 5.0
    evaluate_3d.main(["--only", "lidc"])
    assert made[1]["max_slice_gap_mm"] is None  # off unless asked for


def test_p001_figures_per_lung_count_the_wrong_lung_and_a_lost_lung(tmp_path):
    """Each lung is scored against its own lobes' labels, so infection found only in the other lung is no hit; the
    choice of the gates uses that per-lung agreement (issue 31)."""
    from types import SimpleNamespace

    import numpy as np

    labels = tmp_path / "labels.csv"
    rows = ["image_position_z_mm,infected,LLL,LUL,RLL,RML,RUL"]
    rows += ["0.0,1,1,0,0,0,0", "2.0,1,0,0,1,0,0", "4.0,0,0,0,0,0,0", "6.0,0,0,0,0,0,0"]
    labels.write_text("\n".join(rows) + "\n")
    lung = np.zeros((4, 4, 4), dtype=np.uint8)
    lung[:2], lung[2:] = 1, 2  # right lung on the first two rows, left on the others
    infection = np.zeros_like(lung)
    infection[0, 0, 0] = 1  # slice 0: the left lower lobe is labelled, the infection is in the right lung
    infection[0, 0, 1] = 1  # slice 1: right lower lobe, found in the right lung
    result = SimpleNamespace(affine=np.diag([1.0, 1.0, 2.0, 1.0]), infection=infection, lung=lung)
    fig = evaluate_3d._p001_agreement(result, labels)
    assert fig["agreement"] == 1.0 and fig["sensitivity"] == 1.0  # per slice, everything is found
    # per lung (8 lung-slices): slice 0 misses the left lung and calls the right one; the rest agree
    assert fig["lung_agreement"] == 6 / 8 and fig["lung_sensitivity"] == 0.5 and fig["lung_specificity"] == 5 / 6
    assert fig["lobe_slice_sensitivity"] == {"LLL": 0.0, "RLL": 1.0}
    assert evaluate_3d._score("p001", fig) == 6 / 8
    assert evaluate_3d._score("p001", {"agreement": 0.9}) == 0.9  # outputs made before per-lung figures


def test_a_thinned_scan_is_held_out_with_its_source_scan():
    """``--thick``: P001 thinned to every second slice is the same patient, so the gates that score P001 held out are
    chosen without it too (else P001 would choose its own gates through its copy)."""
    settings = evaluate_3d._settings()
    results = {}
    for item in ("rebuilt", "p001", "p001_4mm", "lidc"):
        results[item] = {"per_setting": {evaluate_3d._key(s): _figures(item.replace("_4mm", ""), s) for s in settings}}
    held = evaluate_3d.leave_one_out(results, settings, SHIPPED)["held_out"]
    # without both P001 items nothing rewards a small extent: the shipped 25 mm
    assert held["p001"]["chosen"]["min_lesion_extent_mm"] == 25.0
    assert held["p001_4mm"]["chosen"]["min_lesion_extent_mm"] == 25.0
    # LIDC held out: both P001 items reward 15 mm
    assert held["lidc"]["chosen"]["min_lesion_extent_mm"] == 15.0
    assert evaluate_3d._patient("p001_4mm") == "p001" and evaluate_3d._patient("cancer") == "cancer"
    assert "p001_4mm" in evaluate_3d.COVID
    fig = {"agreement": 0.9, "lung_agreement": 0.8, "infection_percent": 2.0}
    assert evaluate_3d._score("p001_4mm", fig) == evaluate_3d._score("p001", fig) == 0.8  # scored as P001, per lung
