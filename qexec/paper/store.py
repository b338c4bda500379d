"""SQLite persistence of the paper account, written through after every change."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from qexec.paper.account import Position
from qexec.paper.engine import Dirty, Engine, Sequences, now_ms
from qexec.paper.orders import AlgoOrder, Fill, Order, dump, load

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prices (symbol TEXT PRIMARY KEY, price TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT NOT NULL, side TEXT NOT NULL, amt TEXT NOT NULL, entry TEXT NOT NULL, update_time INTEGER NOT NULL,
    PRIMARY KEY (symbol, side));
CREATE TABLE IF NOT EXISTS orders (order_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS algo_orders (algo_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fills (trade_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
"""


class Store:
    """The state file: every request's changes land in one short transaction before it is answered."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process, not necessarily a power cut.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def load(self, engine: Engine) -> bool:
        """Restore ``engine`` from the file; False when the file holds no account yet."""
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "account" not in meta:
            return False
        account: dict[str, Any] = json.loads(meta["account"])
        engine.reset(Decimal(account["wallet"]), bool(account["dual_side"]))
        engine.account.leverage = {k: int(v) for k, v in account["leverage"].items()}
        engine.account.margin_type = dict(account["margin_type"])
        engine.account.update_time_ms = int(account["update_time"]) or engine.account.update_time_ms
        engine.listen_key = account.get("listen_key")
        engine.listen_key_expires_ms = int(account.get("listen_key_expires_ms") or 0)
        engine.ids = Sequences(**account["ids"])
        marks = {s: Decimal(p) for s, p in self.db.execute("SELECT symbol, price FROM prices")}
        engine.prices.restart(now_ms(), marks)
        for symbol, side, amt, entry, update_time in self.db.execute("SELECT * FROM positions"):
            engine.account.positions[(symbol, side)] = Position(symbol, side, Decimal(amt), Decimal(entry), update_time)
        for (data,) in self.db.execute("SELECT data FROM orders ORDER BY order_id"):
            order = load(Order, data)
            engine.orders[order.order_id] = order
            engine.orders_by_symbol.setdefault(order.symbol, []).append(order.order_id)
            engine.client_ids[(order.symbol, order.client_order_id)] = order.order_id
            if order.live:
                engine.live_orders.setdefault(order.symbol, {})[order.order_id] = order
        for (data,) in self.db.execute("SELECT data FROM algo_orders ORDER BY algo_id"):
            algo = load(AlgoOrder, data)
            engine.algos[algo.algo_id] = algo
            engine.algo_client_ids[algo.client_algo_id] = algo.algo_id
            if algo.actual_order_id is not None:
                engine.algo_of_order[algo.actual_order_id] = algo.algo_id
            if algo.live:
                engine.live_algos.setdefault(algo.symbol, {})[algo.algo_id] = algo
        for (data,) in self.db.execute("SELECT data FROM fills ORDER BY trade_id"):
            fill = load(Fill, data)
            engine.fills.setdefault(fill.symbol, []).append(fill)
            engine.account.position(fill.symbol, fill.position_side).realized += fill.realized_pnl
        engine.fill_count = sum(len(f) for f in engine.fills.values())
        engine.dirty = Dirty()
        return True

    def save(self, engine: Engine) -> None:
        """Write what changed in ``engine`` since the last save, in one transaction."""
        dirty = engine.dirty
        if not dirty:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if dirty.account:
                account = engine.account
                document = {
                    "wallet": str(account.wallet),
                    "dual_side": account.dual_side,
                    "leverage": account.leverage,
                    "margin_type": account.margin_type,
                    "update_time": account.update_time_ms,
                    "listen_key": engine.listen_key,
                    "listen_key_expires_ms": engine.listen_key_expires_ms,
                    "ids": vars(engine.ids),
                }
                db.execute("INSERT OR REPLACE INTO meta VALUES ('account', ?)", (json.dumps(document),))
            if dirty.prices:
                db.executemany(
                    "INSERT OR REPLACE INTO prices VALUES (?, ?)",
                    [(s, str(engine.prices.marks[s])) for s in dirty.prices],
                )
            if dirty.positions:
                rows = []
                for key in dirty.positions:
                    pos = engine.account.positions[key]
                    rows.append((pos.symbol, pos.side, str(pos.amt), str(pos.entry), pos.update_time_ms))
                db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)", rows)
            if dirty.orders:
                db.executemany(
                    "INSERT OR REPLACE INTO orders VALUES (?, ?)",
                    [(i, dump(engine.orders[i])) for i in dirty.orders if i in engine.orders],
                )
            if dirty.algos:
                db.executemany(
                    "INSERT OR REPLACE INTO algo_orders VALUES (?, ?)",
                    [(i, dump(engine.algos[i])) for i in dirty.algos if i in engine.algos],
                )
            if dirty.fills:
                db.executemany(
                    "INSERT OR REPLACE INTO fills VALUES (?, ?)", [(f.trade_id, dump(f)) for f in dirty.fills]
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        engine.dirty = Dirty()

    def wipe(self) -> None:
        """Delete the account, orders, fills and prices (a reset)."""
        self.db.executescript(
            "BEGIN; DELETE FROM positions; DELETE FROM orders; DELETE FROM algo_orders; DELETE FROM fills;"
            " DELETE FROM prices; COMMIT;"
        )
