import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from infnet_monai import __version__
from infnet_monai.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2


def test_every_subcommand_has_its_description_and_shared_options(capsys, monkeypatch):
    from infnet_monai.cli import COMMANDS, build_parser

    monkeypatch.setenv("COLUMNS", "2000")  # no line folding: the description reads as one line
    parser = build_parser()
    assert [name for name, *_ in COMMANDS] == ["predict-slices", "calibrate", "segment", "serve", "demo"]
    for name, func, _, _ in COMMANDS:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert " ".join(func.__doc__.split()) in text
        assert all(flag in text for flag in ("--output", "--model", "--device"))


def test_predict_slices_writes_same_size_pngs(tmp_path, data_dir, tiny_model):
    src = tmp_path / "in put é"
    src.mkdir()
    images = sorted((data_dir / "covid-semiseg" / "train" / "images").glob("*.jpg"))[:3]
    for p in images:
        shutil.copy(p, src / p.name)
    Image.fromarray(np.full((37, 53), 100, np.uint8)).save(src / "odd.png")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["predict-slices", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([p.stem + ".png" for p in images] + ["odd.png"])
    for p in images:
        pred = Image.open(out / f"{p.stem}.png")
        assert pred.mode == "L"
        assert pred.size == Image.open(p).size
    assert Image.open(out / "odd.png").size == (53, 37)


def test_predict_slices_classes_writes_ggo_and_consolidation_maps(tmp_path, tiny_model, tiny_class_model):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (61, 45), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 70), dtype=np.uint8)).save(src / "b.jpg")
    out = tmp_path / "out"
    args = ["predict-slices", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"]
    assert main(args + ["--classes", "--class-model", str(tiny_class_model)]) == 0
    for stem, size in (("a", (45, 61)), ("b", (70, 40))):
        maps = {}
        for sub in ("", "ggo", "consolidation"):
            im = Image.open(out / sub / f"{stem}.png")
            assert im.mode == "L" and im.size == size
            maps[sub] = np.asarray(im).astype(int)
        # the class maps split the infection map (each rounded to 8 bits on its own)
        assert np.abs(maps["ggo"] + maps["consolidation"] - maps[""]).max() <= 1
    # the infection map does not depend on --classes
    plain = tmp_path / "plain"
    assert main(["predict-slices", str(src), "-o", str(plain), "--model", str(tiny_model), "--device", "cpu", "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(plain / "a.png")), np.asarray(Image.open(out / "a.png")))
    assert not (plain / "ggo").exists()


def test_predict_slices_bad_file_does_not_stop_the_others(tmp_path, data_dir, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(data_dir / "covid-semiseg" / "train" / "images" / "0.jpg", src / "good.jpg")
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(["predict-slices", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"])
    assert code == 1
    assert (out / "good.png").is_file() and not (out / "broken.png").exists()
    assert "broken.png" in capsys.readouterr().err


def test_predict_slices_refuses_to_overwrite_inputs(tmp_path, tiny_model, capsys):
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict-slices", str(tmp_path), "-o", str(tmp_path), "--model", str(tiny_model), "-q"]) == 2
    assert "input folder" in capsys.readouterr().err


def test_predict_slices_unsafe_model_is_usage_error(tmp_path, capsys):
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["predict-slices", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(bad), "-q"]) == 2
    assert "bad.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["segment", "--help"], ["predict-slices", "--help"], ["segment"], ["nonsense"]]
)
def test_help_version_and_usage_errors_do_not_import_torch_or_monai(argv):
    """The fast path of the command line (issue: `--version` took 9 s because of `import monai`)."""
    code = (
        "import sys\n"
        "from infnet_monai.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'numpy', 'nibabel', 'SimpleITK') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'EXIT', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    assert line.startswith("HEAVY []"), line
    expected = "0" if argv[-1] in ("--version", "--help") else "2"
    assert line.endswith(f"EXIT {expected}"), line


def _cli_in_subprocess(argv: list[str]) -> tuple[int, list[str], str]:
    """``main(argv)`` in a fresh interpreter: its exit code, the heavy modules it imported, and its stderr."""
    code = (
        "import sys\n"
        "from infnet_monai.cli import main\n"
        f"code = main({argv!r})\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'pydicom', 'SimpleITK') if m in sys.modules)\n"
        "print('RESULT', code, ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    _, exit_code, heavy = ([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1].split(" ") + [""])[:3]
    return int(exit_code), [m for m in heavy.split(",") if m], out.stderr


def test_usage_errors_and_a_busy_output_are_answered_before_any_heavy_import_and_leave_no_output(tmp_path):
    """A wrong path, an empty folder, a device or a busy OUTPUT: exit 2 with the reason, torch never imported (so
    the answer comes in a fraction of a second, not after 30 s of imports), and no OUTPUT folder made."""
    from filelock import FileLock

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    cases = {
        "missing": (str(tmp_path / "nowhere"), "does not exist"),
        "empty": (str(tmp_path / "empty"), "holds no files"),
        "device": ("/dev/null", "is a device, not a regular file or folder"),
    }
    for name, (inp, message) in cases.items():
        out = tmp_path / f"out_{name}"
        code, heavy, err = _cli_in_subprocess(["segment", inp, "-o", str(out)])
        assert (code, heavy) == (2, []), (name, err)
        assert message in err and not out.exists(), name

    src = tmp_path / "in"
    src.mkdir()
    (src / "ct.nii.gz").write_bytes(b"not read: the lock is taken first")
    busy = tmp_path / "busy"
    busy.mkdir()
    held = FileLock(str(busy / ".infnet-covid.lock"))
    held.acquire()
    try:
        code, heavy, err = _cli_in_subprocess(["segment", str(src), "-o", str(busy)])
    finally:
        held.release()
    assert (code, heavy) == (2, []) and "is in use by" in err
    assert sorted(p.name for p in busy.iterdir()) == [".infnet-covid.lock"]


def test_dicom_node_usage_errors_are_answered_before_any_heavy_import(tmp_path):
    """The pull mode of segment and serve check their options, the studies file and the folders before torch,
    MONAI or pydicom are imported, and leave nothing behind."""
    studies = tmp_path / "studies.txt"
    studies.write_text("# nothing listed\n\n")
    out = str(tmp_path / "out")
    cases = {
        "no study file": (["segment", "--from-pacs", "PACS@127.0.0.1:104", "-o", out], "needs --studies"),
        "input and pull": (["segment", str(tmp_path), "--from-pacs", "PACS@127.0.0.1:104", "--studies", str(studies), "-o", out], "not both"),
        "empty studies": (["segment", "--from-pacs", "PACS@127.0.0.1:104", "--studies", str(studies), "-o", out], "lists no study"),
        "send without pull": (["segment", str(tmp_path), "--send-to", "PACS@127.0.0.1:104", "-o", out], "go with --from-pacs"),
        "spool in output": (["serve", "-o", out, "--spool", out + "/spool", "--allow", "PACS@127.0.0.1"], "must be separate folders"),
        "idle after timeout": (["serve", "-o", out, "--allow", "PACS@127.0.0.1", "--idle-seconds", "60", "--series-timeout", "30"], "--series-timeout longer"),
    }  # fmt: skip
    for name, (argv, message) in cases.items():
        code, heavy, err = _cli_in_subprocess(argv)
        assert (code, heavy) == (2, []), (name, err)
        assert message in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.txt"]
