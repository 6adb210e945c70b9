"""scripts/make_demo_picture.py, which regenerates the README's overview picture from ``infnet-covid demo``: the
picture is copied whole, and a failed demo leaves the old picture as it was. The demo itself is replaced by a stub
here (``tests/pipeline/test_cli_options.py::test_demo_end_to_end`` runs the real one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_picture.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_demo_picture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stub_demo(picture: bytes | None, exit_code: int = 0):
    """A command line that does what the demo does to the picture: writes it under DIR, then exits."""

    def command(work: Path) -> list[str]:
        code = f"import sys; from pathlib import Path; p = Path({str(work)!r}) / 'segmentation' / 'phantom_chest'; "
        if picture is not None:
            code += f"p.mkdir(parents=True); (p / 'overview.png').write_bytes({picture!r}); "
        code += f"sys.stderr.write('demo said this'); sys.exit({exit_code})"
        return [sys.executable, "-c", code]

    return command


def test_the_demo_runs_quietly_into_the_work_folder(script, tmp_path):
    command = script.demo_command(tmp_path / "demo")
    assert command[-4:] == ["demo", "-o", str(tmp_path / "demo"), "-q"]
    assert script.DEMO_OVERVIEW == Path("segmentation/phantom_chest/overview.png")


def test_the_picture_is_copied_and_described(script, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "demo_command", _stub_demo(b"\x89PNG new picture"))
    destination = tmp_path / "docs" / "demo_overview.png"
    result = script.make_picture(tmp_path / "demo", destination)
    assert destination.read_bytes() == b"\x89PNG new picture"
    assert result["exit_code"] == 0 and result["bytes"] == len(b"\x89PNG new picture")
    assert len(result["sha256"]) == 64 and not list(destination.parent.glob("*.partial"))


@pytest.mark.parametrize("picture, exit_code", [(None, 0), (b"half a picture", 1)])
def test_a_failed_demo_leaves_the_old_picture(script, tmp_path, monkeypatch, picture, exit_code):
    monkeypatch.setattr(script, "demo_command", _stub_demo(picture, exit_code))
    destination = tmp_path / "demo_overview.png"
    destination.write_bytes(b"old picture")
    with pytest.raises(RuntimeError, match="demo said this"):
        script.make_picture(tmp_path / "demo", destination)
    assert destination.read_bytes() == b"old picture"
