"""The real configs, composed through Hydra's compose API: every option of every group, typed defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf, open_dict

from lstc_gait.config_schema import ModelConfig, TrainerConfig, check_choices

GROUPS = {
    "model": ["lstc", "dynamic"],
    "model/branches": ["all", "temporal", "spatial", "joint", "temporal_spatial", "temporal_joint", "spatial_joint"],
    "pooling": ["hard", "soft", "mean", "max"],
    "dataset": ["synthetic", "flat", "casia_b", "ou_mvlp", "opengait"],
    "loss": ["ce", "triplet", "ce_triplet"],
    "sampler": ["random", "pk", "multiview_pk"],
    "trainer": ["default", "debug", "ddp"],
    "tracking": ["mlflow", "none"],
    "experiment": ["casia_b", "ou_mvlp", "casia_b_cpu"],
}


def test_groups_on_disk_are_the_documented_ones():
    for group, options in GROUPS.items():
        on_disk = {p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")}
        assert set(options) <= on_disk, group


def _targets(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                out.append(v)
            else:
                _targets(v, out)
    return out


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes_and_its_targets_import(group, option):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from lstc_gait.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hcompose(config_name="config", overrides=[f"{group}={option}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option  # the option was really selected
    check_choices(cfg)
    targets = _targets(OmegaConf.to_container(cfg.model), []) + _targets(OmegaConf.to_container(cfg.loss), []) \
        + _targets(OmegaConf.to_container(cfg.sampler), []) + _targets(OmegaConf.to_container(cfg.trainer), [])
    assert len(targets) >= 5  # model, loss, sampler, optimizer, scheduler
    for target in targets:
        try:
            obj = get_class(target)
        except Exception:
            obj = get_method(target)  # functions (build_model, warmup_cosine)
        assert callable(obj), target
    with open_dict(cfg):
        del cfg["hydra"]
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["model"]["pooling"] == resolved["pooling"]["name"]


def test_defaults_are_the_main_job():
    cfg = compose([])
    assert cfg.dataset.name == "synthetic" and cfg.dataset.synthetic is not None
    assert cfg.model.variant == "lstc" and cfg.loss.ce_weight == 1 and cfg.loss.triplet_weight == 1
    assert cfg.sampler._target_.endswith("PKSampler") and cfg.tracking.enabled
    assert cfg.trainer.optimizer.lr == 1e-3 and cfg.trainer.optimizer.weight_decay == 0.0  # Adam 1e-3 (issue 16)
    assert cfg.dataset.evaluation == "casia_b"
    # trainer/default.yaml restates the typed defaults exactly; the model's live only in the schema
    assert OmegaConf.to_container(cfg.trainer) == OmegaConf.to_container(OmegaConf.structured(TrainerConfig))
    model_defaults = OmegaConf.to_container(OmegaConf.structured(ModelConfig))
    assert {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("pooling", "topk", "temperature")} \
        == {k: v for k, v in model_defaults.items() if k not in ("pooling", "topk", "temperature")}


def test_branch_options_are_the_seven_combinations():
    seen = set()
    for option in GROUPS["model/branches"]:
        for model in ("lstc", "dynamic"):
            m = compose([f"model={model}", f"model/branches={option}"]).model
            combo = (m.use_temporal, m.use_spatial, m.use_joint)
            assert any(combo)
            assert option == "all" or "_".join(n for n, on in zip(("temporal", "spatial", "joint"), combo) if on) \
                == option
        seen.add(combo)
    assert len(seen) == 7


def test_pooling_feeds_the_model_and_dynamic_is_a_registered_variant():
    from hydra.utils import instantiate

    from lstc_gait.models import model_names

    cfg = compose(["model=dynamic", "pooling=soft", "pooling.temperature=0.5", "pooling.topk=3",
                   "model.base_channels=4", "model.embedding_dim=8", "model.num_stripes=2"])
    assert (cfg.model.pooling, cfg.model.topk, cfg.model.temperature) == ("soft", 3, 0.5)
    assert cfg.model.variant == "dynamic" and set(GROUPS["model"]) <= set(model_names())
    model = instantiate(cfg.model, num_classes=3, _convert_="all")
    assert model.backbone.config["joint_type"] == "dynamic" and model.backbone.config["pooling"] == "soft"
    # model YAML files only name their variant: the defaults live in the schema alone
    for name in GROUPS["model"]:
        text = (Path(CONF_DIR) / "model" / f"{name}.yaml").read_text()
        keys = [ln.split(":")[0] for ln in text.splitlines() if ln and not ln.startswith(("#", " ", "-"))]
        assert keys == ["defaults", "variant"], (name, keys)


def test_base_channels_default_is_defined_once():
    from lstc_gait.engine.checkpoint import LEGACY_MODEL_DEFAULTS

    assert compose([]).model.base_channels == ModelConfig.base_channels == 8
    # version-1 checkpoints were written with the same default, so a missing key means the same model
    assert LEGACY_MODEL_DEFAULTS["base_channels"] == ModelConfig.base_channels


def test_typos_and_wrong_types_fail_at_compose_time_naming_the_key():
    with pytest.raises(ConfigCompositionException) as e:
        compose(["trainer.optimizer.lrr=0.1"])
    assert "trainer.optimizer.lrr" in str(e.value)
    with pytest.raises(ConfigCompositionException) as e:
        compose(["model.base_channels=wide"])
    assert "model.base_channels" in str(e.value) or "base_channels" in repr(e.value.__cause__)
    with pytest.raises(ConfigCompositionException) as e:
        compose(["sampler.p=1.5"])
    assert "sampler.p" in str(e.value) or "p" in repr(e.value.__cause__)


def test_a_typo_inside_a_yaml_option_names_the_key(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "loss" / "typo.yaml").write_text("_target_: lstc_gait.engine.losses.GaitLoss\nmarginn: 0.3\n")
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as e:
            hcompose(config_name="config", overrides=["loss=typo"])
    text = f"{e.value} {e.value.__cause__!r}"
    assert "marginn" in text


def test_choices_are_checked_naming_the_key():
    with pytest.raises(ValueError, match=r"pooling.name='avg'"):
        check_choices(compose(["pooling.name=avg"]))
    with pytest.raises(ValueError, match="trainer.device"):
        check_choices(compose(["trainer.device=tpu"]))
    with pytest.raises(ValueError, match="budget"):
        check_choices(compose(["trainer.max_steps=0", "trainer.max_epochs=0"]))
    for key in ("trainer.max_minutes", "trainer.eval_every_minutes", "trainer.max_steps"):
        with pytest.raises(ValueError, match=rf"{key}=-1(\.0)? must be >= 0"):
            check_choices(compose([f"{key}=-1"]))


def test_experiment_presets_use_the_fields_settings():
    b = compose(["experiment=casia_b"])
    assert b.dataset.name == "casia_b" and b.dataset.split == "casia_b" and b.dataset.num_frames == 30
    assert (b.sampler.p, b.sampler.k) == (8, 16) and b.sampler._target_.endswith("PKSampler")
    assert b.loss.triplet_weight > 0 and b.trainer.max_steps >= 10000
    o = compose(["experiment=ou_mvlp"])
    assert o.dataset.name == "ou_mvlp" and o.dataset.evaluation == "ou_mvlp" and (o.sampler.p, o.sampler.k) == (32, 8)


def test_debug_shrinks_data_model_and_steps():
    d = compose(["trainer=debug"])
    full = compose([])
    assert d.trainer.max_steps < 50 and d.model.base_channels == 8 and d.trainer.shrink_synthetic.num_subjects <= 8
    assert d.sampler.p * d.sampler.k < full.sampler.p * full.sampler.k
    # options chosen on the command line still apply on top of debug
    assert compose(["trainer=debug", "model=dynamic", "sampler=multiview_pk"]).model.variant == "dynamic"
    ddp = compose(["trainer=ddp"])
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.devices == 2 and ddp.trainer.optimizer.lr == 1e-3


def test_hydra_settings():
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hcompose(config_name="config", return_hydra_config=True)
    assert cfg.hydra.job.chdir is False
    assert "runs/" in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert cfg.hydra.callbacks.mlflow_sweep._target_ == "lstc_gait.tracking.sweep.SweepParentCallback"
    get_class(cfg.hydra.callbacks.mlflow_sweep._target_)
