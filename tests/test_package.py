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


def test_library_modules_import_without_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import lstc_gait.pipelines.train, lstc_gait.pipelines.evaluate, lstc_gait.pipelines.report\n"
        "import lstc_gait.tracking.store, lstc_gait.tracking.report, lstc_gait.tracking.mlflow\n"
        "import lstc_gait.tracking.sweep, lstc_gait.engine.checkpoint, lstc_gait.evaluation.evaluator\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imports_of(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_tracking_has_no_import_circle() -> None:
    import lstc_gait

    folder = Path(lstc_gait.__file__).parent / "tracking"
    graph = {p.stem: {m.rsplit(".", 1)[-1] for m in _imports_of(p) if m.startswith("lstc_gait.tracking.")}
             for p in folder.glob("*.py") if p.stem != "__init__"}
    seen: dict[str, int] = {}

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import circle: {' -> '.join((*stack, node))}"
        if seen.get(node):
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*stack, node))
        seen[node] = 1

    for module in graph:
        visit(module, ())
    assert graph["store"] <= set() and "store" in graph["mlflow"] and "sweep" not in graph["report"]


def test_os_replace_is_called_from_few_places() -> None:
    import lstc_gait

    root = Path(lstc_gait.__file__).parent
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "os.replace(" in p.read_text())
    assert "utils/fileio.py" in callers
    allowed = {
        "utils/fileio.py",  # the atomic-write helper
        "data/synthetic/generate.py",  # renames a whole sequence folder into place (fileio writes files)
        "models/native/build.py",  # the fast-path build
    }
    assert set(callers) <= allowed, callers
