"""DVC: the repro planner's internals (``dvc.repo.reproduce``), which ``aipc repro`` uses to plan the stages
exactly as ``dvc repro`` would. No public API gives the plan; one DVC 3.x release renamed one of them."""

from __future__ import annotations

from typing import Any

from .gate import Gate

GATE = Gate("dvc", ("3.67.1",), __name__)


def repro_plan(repo: Any, targets: list[str]) -> tuple[list[Any], Any]:
    """The stages ``dvc repro targets`` considers, in its order (frozen stages' producers cut as DVC does),
    and the whole stage graph (edges from a stage to the stages producing its deps)."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    stages = collect_stages(repo, targets)
    full = repo.index.graph
    return plan_repro(get_active_graph(full), stages), full
