"""Names shown in the MLflow UI: branch settings (``temporal+spatial``) and run names.

Written once for the tracker, the sweep callback and the report. Run names are short, so the UI's
runs table shows them whole: a sweep job is named by its swept settings only
(``branches=spatial+joint``), a single run by its overrides except paths and tracking settings, a
sweep's parent run by the sweep's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Overrides that only say where things go or how they are shown: never part of a run's name.
NAME_EXCLUDED_PREFIXES = ("hydra.", "hydra/", "tracking.", "tracking/", "paths.")
NAME_EXCLUDED_KEYS = ("resume", "init_from", "trainer.progress", "tracking")
_PATH_WORDS = ("dir", "root", "path", "file", "uri")
BRANCH_KEYS = ("model/branches", "model.branches", "branches")

BRANCHES = ("temporal", "spatial", "joint")
# Config names of the nested model/branches group, in the order the docs list them.
BRANCH_CONFIG_WORDS = {
    "all": "temporal+spatial+joint",
    "temporal": "temporal",
    "spatial": "spatial",
    "joint": "joint",
    "temporal_spatial": "temporal+spatial",
    "temporal_joint": "temporal+joint",
    "spatial_joint": "spatial+joint",
}


def branches_in_words(use_temporal: bool, use_spatial: bool, use_joint: bool) -> str:
    """The ``temporal+spatial+joint`` style name of a branch setting of the asymmetric block.

    Args:
        use_temporal: The temporal branch is on.
        use_spatial: The spatial branch is on.
        use_joint: The joint (LSTC / dynamic) branch is on.

    Returns:
        The on branches joined by ``+``; ``none`` when all are off.
    """
    on = [name for name, flag in zip(BRANCHES, (use_temporal, use_spatial, use_joint)) if flag]
    return "+".join(on) if on else "none"


def branch_choice_in_words(choice: str) -> str:
    """Words for a ``model/branches`` option name.

    Args:
        choice: The option (``temporal_spatial``).

    Returns:
        Its words (``temporal+spatial``).
    """
    choice = str(choice).strip()
    return BRANCH_CONFIG_WORDS.get(choice, choice.replace("_", "+"))


def override_key(item: str) -> str:
    """The key of a ``key=value`` override, without Hydra's ``+``/``++``/``~`` prefixes.

    Args:
        item: The override text.

    Returns:
        Its key.
    """
    return item.partition("=")[0].strip().lstrip("+~")


def names_the_run(key: str, value: str = "") -> bool:
    """Whether an override belongs in a run's name (it is not a path, tracking or display setting).

    Args:
        key: The override key.
        value: Its value text (absolute paths never name a run).

    Returns:
        True when the override changes what is trained.
    """
    if key.startswith(NAME_EXCLUDED_PREFIXES) or key in NAME_EXCLUDED_KEYS:
        return False
    last = key.replace("/", ".").rsplit(".", 1)[-1].lower()
    if any(last == w or last.endswith("_" + w) or last.endswith(w + "s") for w in _PATH_WORDS):
        return False
    return not value.strip().startswith(("/", "~", "sqlite:", "file:", "http:", "https:"))


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Short, distinct display names of override keys: the last part (``model/branches`` -> ``branches``,
    ``model.num_stripes`` -> ``num_stripes``), the whole key where two last parts coincide.

    Args:
        keys: Override keys.

    Returns:
        Key -> display name.
    """
    last = {k: k.replace("/", ".").rsplit(".", 1)[-1] for k in keys}
    counts: dict[str, int] = {}
    for name in last.values():
        counts[name] = counts.get(name, 0) + 1
    return {k: (name if counts[name] == 1 else k) for k, name in last.items()}


def _shown_value(key: str, value: str) -> str:
    return branch_choice_in_words(value) if key in BRANCH_KEYS else value


def job_run_name(overrides: Mapping[str, str], swept: Sequence[str] | None = None) -> str:
    """The MLflow name of a training run.

    Args:
        overrides: The job's overrides, key -> value text, in command-line order.
        swept: The keys its sweep varies (None: a single run). A sweep job is named by these only.

    Returns:
        ``branches=spatial+joint`` (sweep job), ``model=dynamic,pooling=soft`` (single run), or
        ``default`` when nothing names it.
    """
    if swept is not None:
        keys = [k for k in swept if k in overrides] or [k for k in overrides if names_the_run(k, overrides[k])]
    else:
        keys = [k for k in overrides if names_the_run(k, overrides[k])]
    if not keys:
        return "default"
    short = short_keys(keys) if swept is not None else {k: k for k in keys}
    return ",".join(f"{short[k]}={_shown_value(k, overrides[k])}" for k in keys)[:250]


def sweep_run_name(task_overrides: Sequence[str], sweeper_params: Mapping[str, str] | None = None) -> str:
    """The MLflow name of a sweep's parent run: its parameters, without tracking or path settings.

    Args:
        task_overrides: The multirun's command-line overrides (``seed=0,1``, ``experiment=...``).
        sweeper_params: ``hydra.sweeper.params`` (a preset's swept keys -> value lists).

    Returns:
        ``sweep experiment=ablation_branches branches=all,temporal,...`` style text (250 characters at most).
    """
    items: dict[str, str] = {}
    for item in task_overrides:
        key, value = override_key(item), item.partition("=")[2].strip()
        if names_the_run(key, value):
            items[key] = value
    for key, value in (sweeper_params or {}).items():
        if names_the_run(str(key), str(value)):
            items.setdefault(str(key), str(value))
    short = short_keys([k for k in items if k != "experiment"])
    parts = [f"experiment={items['experiment']}"] if "experiment" in items else []
    parts += [f"{short[k]}={items[k]}" for k in short]
    return ("sweep " + " ".join(parts)).strip()[:250] if parts else "sweep"


__all__ = ["BRANCHES", "BRANCH_CONFIG_WORDS", "BRANCH_KEYS", "NAME_EXCLUDED_KEYS", "NAME_EXCLUDED_PREFIXES",
           "branch_choice_in_words", "branches_in_words", "job_run_name", "names_the_run", "override_key",
           "short_keys", "sweep_run_name"]
