"""The ``promote`` flow: point ``NAME@ALIAS`` at a translated version by hand.

Refuses a version whose recorded quality gate failed unless ``force``. The records and aliases are
``storage/promotion.py``'s; the gate itself is ``models/metrics/gate.py``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from sim2real.flows.reporting import artifact_key
from sim2real.storage.promotion import DEFAULT_ALIAS, read_gate
from sim2real.storage.versions import default_root
from sim2real.tasks.promotion import promote_version_task


@flow(name="promote", flow_run_name="promote-{ref}")
def promote_flow(ref: str, alias: str = DEFAULT_ALIAS, force: bool = False, root: str | None = None) -> dict:
    """Promote ``ref`` by hand: refuses a version whose recorded gate failed unless ``force``."""
    logger = get_run_logger()
    root = root or default_root()
    gate = read_gate(root, ref)
    if gate is not None and not gate["passed"] and not force:
        raise PermissionError(
            f"{gate['ref']}: failed the quality gate ({'; '.join(gate['reasons'])}); use force to promote"
        )
    result = promote_version_task(root, ref, alias)
    logger.info("%s → %s (was %s)", result["alias"], result["ref"], result["previous"])
    create_markdown_artifact(
        f"**{result['alias']}** → `{result['ref']}` (was `{result['previous']}`)"
        + (" — forced past a failed gate" if gate is not None and not gate["passed"] else ""),
        key=artifact_key("promote", result["alias"].split("@")[0]),
        description="Alias promotion",
    )
    return {**result, "forced": bool(force and gate is not None and not gate["passed"])}
