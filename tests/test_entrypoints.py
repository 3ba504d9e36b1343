"""Entry points: thin modules, a console script each, one user-error path (exit 2, traceback on request)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "extract", "export", "report", "prepare")


def test_entry_modules_are_thin_and_have_console_scripts():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for command in COMMANDS:
        lines = (ROOT / "lstc_gait" / f"{command}.py").read_text().splitlines()
        assert len(lines) <= 80, (command, len(lines))
        assert scripts[f"lstc-gait-{command}"] == f"lstc_gait.{command}:main"


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    out = _run(["lstc_gait.extract", "checkpoint=nope.pt"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("lstc_gait.extract: error: checkpoint ")
    assert "Traceback" not in out.stderr
    shown = _run(["lstc_gait.extract", "checkpoint=nope.pt"], tmp_path, LSTC_GAIT_TRACEBACK="1")
    assert shown.returncode != 0 and "Traceback" in shown.stderr and "CheckpointError" in shown.stderr


def test_train_config_errors_are_user_errors(tmp_path):
    out = _run(["lstc_gait.train", "trainer=debug", "tracking=none", "model.variant=nope",
                f"paths.output_dir={tmp_path}"], tmp_path)
    assert out.returncode == 2 and "lstc_gait.train: error: config key model.variant='nope'" in out.stderr
    assert "Traceback" not in out.stderr
