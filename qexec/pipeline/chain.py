"""The chain's shape, decided here alone: its steps in order, and which of them a ticket still needs.

`place → confirm → publish → protect` is the full chain. The place step can finish the intent itself (the venue's
answer was final, or a verdict needed no order): then the result is out and confirm and publish are left out; when
the place step could also protect the position, protect is left out too.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """A step of the chain, by its Celery task name (a contract: other programs call these names)."""

    PLACE = "qexec.place_order"
    CONFIRM = "qexec.confirm_fill"
    PUBLISH = "qexec.publish_execution"
    PROTECT = "qexec.protect_position"

    @property
    def suffix(self) -> str:
        """The step's part of its task id (`<intent id>:place`, ...): a re-sent chain reuses the same ids."""
        return self.name.lower()


STEPS = (Step.PLACE, Step.CONFIRM, Step.PUBLISH, Step.PROTECT)
RESUMED = STEPS[1:]  # a confirmation sent again for an order placed already (its chain's message was lost)


def left_out(*, published: bool, protected: bool) -> frozenset[Step]:
    """The steps after `place` that a ticket no longer needs, once the place step has `published` its result (and
    `protected` its position)."""
    skipped: set[Step] = set()
    if published:
        skipped |= {Step.CONFIRM, Step.PUBLISH}
        if protected:
            skipped.add(Step.PROTECT)
    return frozenset(skipped)
