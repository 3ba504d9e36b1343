"""Shared test fixtures: the composed Hydra config and one tiny synthetic dataset for the whole session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

CONF_DIR = str(Path(__file__).resolve().parents[1] / "lstc_gait" / "conf")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: one intra-op thread per worker avoids oversubscription.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP barrier stalls when the cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compose(overrides: list[str] | None = None, config_name: str = "config"):
    """The real config, composed through Hydra's compose API (as `python -m lstc_gait.train` does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lstc_gait.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the trainer=debug synthetic instance, generated once for all xdist workers
    (the generator's file lock serialises them; the second one finds it ready)."""
    from omegaconf import OmegaConf

    from lstc_gait.data.selection import dataset_settings, effective_dataset_node
    from lstc_gait.data.synthetic import ensure_synthetic

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    data_dir = root / "lstc_gait_tiny_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose(["trainer=debug"])
    node = effective_dataset_node(OmegaConf.to_container(cfg, resolve=True))
    ensure_synthetic(dataset_settings(node).synthetic, data_dir, workers=1, progress=False)
    return data_dir


@pytest.fixture()
def debug_cfg(tiny_data_dir: Path, tmp_path: Path) -> Callable[..., object]:
    """compose(trainer=debug on the shared tiny dataset, outputs in tmp_path, no tracking, + overrides)."""

    def make(*overrides: str):
        base = ["trainer=debug", f"paths.data_dir={tiny_data_dir}", f"paths.output_dir={tmp_path / 'outputs'}",
                "tracking=none", "trainer.progress=false", "dataset.num_frames=6",
                "dataset.test_max_frames=8"]
        return compose(base + list(overrides))

    return make
