"""Package-level promises: importing is cheap (no mlflow), and the configs ship inside the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_import_does_not_load_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import lstc_gait, lstc_gait.models, lstc_gait.data, lstc_gait.evaluation, lstc_gait.compat\n"
        "import lstc_gait.train, lstc_gait.tracking, lstc_gait.data.synthetic\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_configs_ship_inside_the_package() -> None:
    import lstc_gait

    conf = Path(lstc_gait.__file__).parent / "conf"
    for name in ("config.yaml", "prepare.yaml", "evaluate.yaml", "extract.yaml", "export.yaml", "report.yaml"):
        assert (conf / name).is_file(), name
    groups = {p.name for p in conf.iterdir() if p.is_dir()}
    assert {"model", "pooling", "dataset", "loss", "sampler", "trainer", "tracking", "experiment"} <= groups
