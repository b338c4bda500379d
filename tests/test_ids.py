"""Client order ids: every one qexec mints is read back as the step that sent it, and fits Binance's rules."""

from __future__ import annotations

import re

import pytest

from qexec import ids

MINTED = [
    (ids.entry("intent-1"), ids.Sender.ENTRY),
    (ids.halt_close(), ids.Sender.HALT_CLOSE),
    (ids.reverse_close("intent-1"), ids.Sender.REVERSE_CLOSE),
    (ids.emergency_close("BTCUSDT:LONG:1"), ids.Sender.EMERGENCY_CLOSE),
    (ids.stop_loss("BTCUSDT:LONG:1", 3), ids.Sender.STOP_LOSS),
    (ids.take_profit("BTCUSDT:LONG:1", 0), ids.Sender.TAKE_PROFIT),
    (ids.verify_close("run1", 2), ids.Sender.VERIFY_CLOSE),
]


@pytest.mark.parametrize(("client_id", "sender"), MINTED)
def test_each_minted_id_names_the_step_that_sent_it(client_id: str, sender: ids.Sender) -> None:
    """A `halt --flatten` close starts like an entry (`qx-`) and is still read as the halt's."""
    assert ids.sender_of(client_id) is sender
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,36}", client_id), "Binance's newClientOrderId rule"


def test_an_id_qexec_did_not_mint_is_foreign_and_a_generation_is_read_back() -> None:
    assert ids.sender_of("web_1a2b3c") is ids.Sender.FOREIGN
    assert ids.sender_of("") is ids.Sender.FOREIGN
    assert ids.generation_of(ids.stop_loss("BTCUSDT:LONG:1", 7)) == 7
    assert ids.generation_of("web_1a2b3c") == 0


def test_deterministic_ids_are_the_same_for_the_same_owner_and_differ_between_owners() -> None:
    """A re-run must find its order again by id; two intents never share one."""
    assert ids.entry("a") == ids.entry("a") != ids.entry("b")
    assert ids.stop_loss("p", 1) != ids.stop_loss("p", 2) != ids.take_profit("p", 2)
    assert ids.halt_close() != ids.halt_close()
