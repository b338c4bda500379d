"""The chain's shape: its steps are the contract's task names, and what the place step's outcome leaves out."""

from __future__ import annotations

from qexec.pipeline.chain import STEPS, Step, left_out
from qexec.worker.app import app


def test_the_chain_runs_the_four_contract_tasks_in_order_and_each_is_registered() -> None:
    """Names other programs rely on (DESIGN.md): place, confirm, publish, protect."""
    assert [s.value for s in STEPS] == [
        "qexec.place_order",
        "qexec.confirm_fill",
        "qexec.publish_execution",
        "qexec.protect_position",
    ]
    app.loader.import_default_modules()
    assert all(step.value in app.tasks for step in STEPS)


def test_a_result_published_by_the_place_step_leaves_confirm_and_publish_out_and_protect_only_when_done() -> None:
    assert left_out(published=False, protected=False) == frozenset()
    assert left_out(published=True, protected=False) == {Step.CONFIRM, Step.PUBLISH}
    assert left_out(published=True, protected=True) == {Step.CONFIRM, Step.PUBLISH, Step.PROTECT}
