"""Names shown for branch settings (``temporal+spatial``), written once for the tracker and the report."""

from __future__ import annotations

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


__all__ = ["BRANCHES", "BRANCH_CONFIG_WORDS", "branch_choice_in_words", "branches_in_words"]
