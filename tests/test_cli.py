"""`rrr --help` and every subcommand's help explain themselves; bad configs exit 2 early."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rrr.driver.cli import COMMANDS, main


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "rrr.driver.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "Reflect, Retry, Reward" in out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "KEY=VALUE" in out
    assert len(out.splitlines()) > 8


def test_bad_override_exits_2_with_key(capsys):
    assert main(["eval", "learner.lrr=1"]) == 2
    assert "learner.lrr: unknown key" in capsys.readouterr().err


def test_config_keys_lists_everything(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "learner.kl_coef (float, default 0.001)" in out


def test_config_show_applies_overrides(capsys):
    assert main(["config", "learner.lr=2e-6"]) == 0
    assert "lr: 2.0e-06" in capsys.readouterr().out
