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


def test_an_unwritable_run_folder_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    out = _run(["lstc_gait.train", "trainer=debug", "tracking=none", f"paths.output_dir={tmp_path}",
                f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstc_gait.train: error: ") and "a_file" in lines[0]


def test_a_multirun_job_failure_reaches_the_sweep_callback_then_is_one_line(tmp_path):
    record = tmp_path / "jobs.txt"
    out = _run(["lstc_gait.train", "--multirun", "trainer=debug", "tracking=none", "sampler.k=0,1",
                f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                "+hydra.callbacks.record._target_=hydra_job_recorder.JobRecorder"], tmp_path,
               PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", JOB_RECORD=str(record))
    jobs = record.read_text().splitlines()
    assert jobs[0].startswith("FAILED\tRunConfigError\tconfig key sampler.k=0 must be >= 1"), jobs
    assert jobs[1].startswith("FAILED\tRunConfigError\tsampler.k=1: the triplet loss"), jobs
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "lstc_gait.train: error: config key sampler.k=0 must be >= 1"
