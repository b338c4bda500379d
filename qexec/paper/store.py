"""SQLite persistence of the paper accounts, written through after every change."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from qexec.paper.account import DEFAULT_ACCOUNT, Position
from qexec.paper.accounts import Accounts
from qexec.paper.engine import Dirty, Engine, now_ms
from qexec.paper.orders import AlgoOrder, Fill, Order, dump, load

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prices (symbol TEXT PRIMARY KEY, price TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT NOT NULL, side TEXT NOT NULL, amt TEXT NOT NULL, entry TEXT NOT NULL, update_time INTEGER NOT NULL,
    account TEXT NOT NULL DEFAULT 'default', PRIMARY KEY (account, symbol, side));
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY, data TEXT NOT NULL, account TEXT NOT NULL DEFAULT 'default');
CREATE TABLE IF NOT EXISTS algo_orders (
    algo_id INTEGER PRIMARY KEY, data TEXT NOT NULL, account TEXT NOT NULL DEFAULT 'default');
CREATE TABLE IF NOT EXISTS fills (
    trade_id INTEGER PRIMARY KEY, data TEXT NOT NULL, account TEXT NOT NULL DEFAULT 'default');
"""
# A file written before the paper exchange served several accounts: one account document in meta, tables without
# an account column. Its rows become the default account's.
OWNED_TABLES = ("orders", "algo_orders", "fills")
POSITIONS_V1_TO_V2 = """
ALTER TABLE positions RENAME TO positions_v1;
CREATE TABLE positions (
    symbol TEXT NOT NULL, side TEXT NOT NULL, amt TEXT NOT NULL, entry TEXT NOT NULL, update_time INTEGER NOT NULL,
    account TEXT NOT NULL DEFAULT 'default', PRIMARY KEY (account, symbol, side));
INSERT INTO positions SELECT symbol, side, amt, entry, update_time, 'default' FROM positions_v1;
DROP TABLE positions_v1;
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
        self._migrate()

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}

    def _migrate(self) -> None:
        """Turn a single-account file into one whose rows and document are the ``default`` account's."""
        db = self.db
        db.execute("BEGIN")
        try:
            for table in OWNED_TABLES:
                if "account" not in self._columns(table):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN account TEXT NOT NULL DEFAULT '{DEFAULT_ACCOUNT}'")
            if "account" not in self._columns("positions"):
                for statement in POSITIONS_V1_TO_V2.split(";"):
                    if statement.strip():
                        db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
            if row is not None:
                document = json.loads(row[0])
                db.execute("INSERT OR REPLACE INTO meta VALUES ('ids', ?)", (json.dumps(document.pop("ids")),))
                db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?)", (DEFAULT_ACCOUNT, json.dumps(document)))
                db.execute("DELETE FROM meta WHERE key = 'account'")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def load(self, accounts: Accounts) -> bool:
        """Restore every account the file holds and the exchange serves (the others start fresh), the id
        sequences and the marks; False when the file holds no account yet."""
        documents = dict(self.db.execute("SELECT name, data FROM accounts").fetchall())
        if not documents:
            return False
        ids = self.db.execute("SELECT value FROM meta WHERE key = 'ids'").fetchone()
        if ids is not None:
            vars(accounts.ids).update(json.loads(ids[0]))
        marks = {s: Decimal(p) for s, p in self.db.execute("SELECT symbol, price FROM prices")}
        accounts.prices.restart(now_ms(), marks)
        for engine in accounts:
            if engine.name in documents:
                self._load_account(engine, json.loads(documents[engine.name]))
        return True

    def _load_account(self, engine: Engine, account: dict[str, Any]) -> None:
        """Restore one account: its document, positions, orders, algo orders and fills."""
        name = (engine.name,)
        engine.reset(Decimal(account["wallet"]), bool(account["dual_side"]))
        engine.account.leverage = {k: int(v) for k, v in account["leverage"].items()}
        engine.account.margin_type = dict(account["margin_type"])
        engine.account.update_time_ms = int(account["update_time"]) or engine.account.update_time_ms
        engine.listen_key = account.get("listen_key")
        engine.listen_key_expires_ms = int(account.get("listen_key_expires_ms") or 0)
        positions = "SELECT symbol, side, amt, entry, update_time FROM positions WHERE account = ?"
        for symbol, side, amt, entry, update_time in self.db.execute(positions, name):
            engine.account.positions[(symbol, side)] = Position(symbol, side, Decimal(amt), Decimal(entry), update_time)
        for (data,) in self.db.execute("SELECT data FROM orders WHERE account = ? ORDER BY order_id", name):
            order = load(Order, data)
            engine.orders[order.order_id] = order
            engine.orders_by_symbol.setdefault(order.symbol, []).append(order.order_id)
            engine.client_ids[(order.symbol, order.client_order_id)] = order.order_id
            if order.live:
                engine.live_orders.setdefault(order.symbol, {})[order.order_id] = order
        for (data,) in self.db.execute("SELECT data FROM algo_orders WHERE account = ? ORDER BY algo_id", name):
            algo = load(AlgoOrder, data)
            engine.algos[algo.algo_id] = algo
            engine.algo_client_ids[algo.client_algo_id] = algo.algo_id
            if algo.actual_order_id is not None:
                engine.algo_of_order[algo.actual_order_id] = algo.algo_id
            if algo.live:
                engine.live_algos.setdefault(algo.symbol, {})[algo.algo_id] = algo
        for (data,) in self.db.execute("SELECT data FROM fills WHERE account = ? ORDER BY trade_id", name):
            fill = load(Fill, data)
            engine.fills.setdefault(fill.symbol, []).append(fill)
            engine.account.position(fill.symbol, fill.position_side).realized += fill.realized_pnl
        engine.fill_count = sum(len(f) for f in engine.fills.values())
        engine.dirty = Dirty()

    def save(self, accounts: Accounts) -> None:
        """Write what changed in every account and in the marks since the last save, in one transaction."""
        if not accounts.moved and not any(engine.dirty for engine in accounts):
            return
        db = self.db
        db.execute("BEGIN")
        try:
            for engine in accounts:
                if engine.dirty:
                    self._save_account(engine)
            if any(engine.dirty.account for engine in accounts):
                db.execute("INSERT OR REPLACE INTO meta VALUES ('ids', ?)", (json.dumps(vars(accounts.ids)),))
            if accounts.moved:
                db.executemany(
                    "INSERT OR REPLACE INTO prices VALUES (?, ?)",
                    [(s, str(accounts.prices.marks[s])) for s in accounts.moved],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for engine in accounts:
            engine.dirty = Dirty()
        accounts.moved = set()

    def _save_account(self, engine: Engine) -> None:
        """Write one account's changes (inside the open transaction)."""
        db, dirty, name = self.db, engine.dirty, engine.name
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
            }
            db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?)", (name, json.dumps(document)))
        if dirty.positions:
            rows = []
            for key in dirty.positions:
                pos = engine.account.positions[key]
                rows.append((pos.symbol, pos.side, str(pos.amt), str(pos.entry), pos.update_time_ms, name))
            db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?)", rows)
        if dirty.orders:
            db.executemany(
                "INSERT OR REPLACE INTO orders VALUES (?, ?, ?)",
                [(i, dump(engine.orders[i]), name) for i in dirty.orders if i in engine.orders],
            )
        if dirty.algos:
            db.executemany(
                "INSERT OR REPLACE INTO algo_orders VALUES (?, ?, ?)",
                [(i, dump(engine.algos[i]), name) for i in dirty.algos if i in engine.algos],
            )
        if dirty.fills:
            db.executemany(
                "INSERT OR REPLACE INTO fills VALUES (?, ?, ?)", [(f.trade_id, dump(f), name) for f in dirty.fills]
            )

    def wipe(self, account: str | None = None) -> None:
        """Delete every account, order, fill and price (a reset), or only ``account``'s positions, orders and
        fills (its document is rewritten by the next save)."""
        db = self.db
        db.execute("BEGIN")
        try:
            for table in ("positions", *OWNED_TABLES, "accounts"):
                if account is None:
                    db.execute(f"DELETE FROM {table}")  # noqa: S608 - the table names are constants
                elif table != "accounts":
                    db.execute(f"DELETE FROM {table} WHERE account = ?", (account,))  # noqa: S608 - as above
            if account is None:
                db.execute("DELETE FROM prices")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
