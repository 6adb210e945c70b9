"""Sharded cohorts under torchrun: a deterministic balanced split, and 2 CPU ranks (gloo) giving the same table as
one process."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from infnet_monai.pipeline.distributed import shard_by_size

VOLATILE = {"seconds", "stage_seconds", "infection_mask_path", "infection_classes_path", "lung_mask_path", "lesions_path"}


def test_shards_are_disjoint_complete_deterministic_and_balanced():
    sizes = [50, 10, 10, 10, 10, 10, 5, 5]
    shares = shard_by_size(sizes, 2)
    assert sorted(i for s in shares for i in s) == list(range(len(sizes)))
    assert shares == shard_by_size(sizes, 2) and all(s == sorted(s) for s in shares)
    loads = [sum(sizes[i] for i in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= 10  # 55 / 55
    assert shard_by_size([3], 4) == [[0], [], [], []]
    with pytest.raises(ValueError):
        shard_by_size([1], 0)


def _rows(out):
    with open(out / "burden.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_table(tmp_path, data_dir, tiny_model, tiny_class_model):
    ct = data_dir / "ct"
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    shutil.copy(ct / "abdomen_3mm_small.nii.gz", cohort / "a.nii.gz")
    shutil.copy(ct / "abdomen_3mm_small.nii.gz", cohort / "b.nii.gz")
    shutil.copy(ct / "abdomen_3mm.nii.gz", cohort / "c.nii.gz")
    shutil.copytree(ct / "chest_2slice_dicom", cohort / "d")
    options = ["--model", str(tiny_model), "--class-model", str(tiny_class_model), "--device", "cpu", "-q"]
    command = shutil.which("infnet-covid")
    program = [command] if command else ["-m", "infnet_monai.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, *program, "segment", str(cohort), "-o", str(tmp_path / "one"), *options],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    sharded = subprocess.run([*torchrun, *program, "segment", str(cohort), "-o", str(tmp_path / "two"), *options],
                             capture_output=True, text=True, env=env, timeout=600)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    assert sharded.stdout.count("table:") == 1  # rank 0 reports
    stats = [json.loads(p.read_text()) for p in (tmp_path / "two").glob("*/stats.json")]
    assert len(stats) == 4 and {s["world_size"] for s in stats} == {2} and {s["rank"] for s in stats} == {0, 1}
    assert (tmp_path / "two" / "report.html").is_file()
