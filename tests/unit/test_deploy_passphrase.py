"""flocker-deploy's passphrase for the secrets in its state: the user's, else one of its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from flocker_pulumi.cli.flocker_deploy import PASSPHRASE_ENV, PASSPHRASE_FILE, passphrase_env


@pytest.fixture
def no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in PASSPHRASE_ENV:
        monkeypatch.delenv(variable, raising=False)


def test_one_is_made_once_kept_private_and_said_where(tmp_path: Path, no_passphrase: None, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "workspace"
    first = passphrase_env(str(tmp_path), str(work), "s")
    path = tmp_path / PASSPHRASE_FILE
    assert first == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text()) >= 32
    assert str(path) in capsys.readouterr().err
    made = path.read_text()
    assert passphrase_env(str(tmp_path), str(work), "other") == first
    assert path.read_text() == made
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("variable", PASSPHRASE_ENV)
def test_the_users_own_wins(tmp_path: Path, no_passphrase: None, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "mine")
    assert passphrase_env(str(tmp_path), str(tmp_path / "workspace"), "s") == {variable: "mine"}
    assert not (tmp_path / PASSPHRASE_FILE).exists()


def test_a_stack_made_with_the_empty_passphrase_keeps_it_and_is_told(
    tmp_path: Path, no_passphrase: None, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "workspace"
    work.mkdir()
    (work / "Pulumi.s.yaml").write_text("encryptionsalt: v1:abc\n")
    assert passphrase_env(str(tmp_path), str(work), "s") == {"PULUMI_CONFIG_PASSPHRASE": ""}
    assert "empty passphrase" in capsys.readouterr().err
    assert not (tmp_path / PASSPHRASE_FILE).exists()
