"""The shared data folder has one definition (infnet_monai.data.paths)."""

from pathlib import Path

from infnet_monai.data import DATA_ENV_VAR, shared_data_dir


def test_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path


def test_default_is_beside_the_checkout_whatever_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    assert shared_data_dir() == (repo.parent / "shared" / "data").resolve()
