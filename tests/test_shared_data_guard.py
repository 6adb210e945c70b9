"""With INFNET_REQUIRE_SHARED_DATA=1 (set by .ci/run), a missing shared data folder fails the run instead of
skipping the tests that need it."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(tmp_path, require: bool, data=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, INFNET_SHARED_DATA=str(data or tmp_path / "missing"))
    env.pop("INFNET_REQUIRE_SHARED_DATA", None)
    if require:
        env["INFNET_REQUIRE_SHARED_DATA"] = "1"
    target = "tests/stats/test_class_burden.py"  # needs no data: only the guard can fail it
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_missing_shared_data_fails_when_required(tmp_path):
    proc = _pytest(tmp_path, require=True)
    assert proc.returncode == 1
    assert "shared data is missing" in proc.stdout + proc.stderr


def test_missing_shared_data_only_skips_when_not_required(tmp_path):
    assert _pytest(tmp_path, require=False).returncode == 0


def test_missing_meta_schema_fails_when_required(tmp_path):
    """The bundle schema test's file is found beside $INFNET_SHARED_DATA (``../monai``), and a required run does not
    skip it when it is missing."""
    data = tmp_path / "shared" / "data"
    for sub in ("covid-semiseg", "ct"):
        (data / sub).mkdir(parents=True)
    proc = _pytest(tmp_path, require=True, data=data)
    assert proc.returncode == 1
    assert str(tmp_path / "shared" / "monai" / "meta_schema.json") in proc.stdout + proc.stderr
