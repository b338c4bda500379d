"""The console's one page: HTML, CSS and the script that renders each server-sent snapshot (no build step)."""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="qexec-token" content="__TOKEN__">
<title>qexec console · __MODE__</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2329; }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1em; background: #1d2329; color: #fff; }
header h1 { font-size: 16px; margin: 0; }
.badge { padding: .15em .6em; border-radius: 3px; font-weight: 600; }
.ok { background: #1f883d; color: #fff; } .bad { background: #cf222e; color: #fff; }
main { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; padding: 1em; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 4px; padding: .5em .8em; overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 14px; margin: .2em 0 .5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .15em .5em; border-bottom: 1px solid #eaeef2; white-space: nowrap; }
th { color: #57606a; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.red { color: #cf222e; font-weight: 600; } .green { color: #1f883d; } .muted { color: #57606a; }
button { font: inherit; padding: .3em .9em; border-radius: 3px; border: 1px solid #8c959f; cursor: pointer; }
button.danger { background: #cf222e; color: #fff; border-color: #a40e26; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: 0; }
dt { color: #57606a; }
</style>
</head>
<body>
<header>
  <h1>qexec console</h1>
  <span>mode <b id="mode">__MODE__</b> · venue <b id="venue-host">…</b></span>
  <span>kill switch <span id="halt-state" class="badge">…</span></span>
  <span id="unprotected-oldest"></span>
  <span style="flex:1"></span>
  <button id="halt" class="danger">Halt</button>
  <button id="flatten" class="danger">Halt and flatten</button>
  <button id="resume">Resume</button>
  <span class="muted">__USER__ · <span id="live">connecting…</span></span>
</header>
<div id="action-status" class="muted" style="padding:.4em 1em"></div>
<main>
  <section class="wide"><h2>Open positions</h2><table id="positions"></table></section>
  <section class="wide"><h2>Latest results</h2><table id="results"></table></section>
  <section><h2>Exits</h2><table id="exits"></table></section>
  <section><h2>Venue health</h2><dl id="health"></dl></section>
  <section><h2>Intents in flight <span id="inflight-count"></span></h2><table id="inflight"></table></section>
  <section><h2>Dead letters <span id="dlq-count"></span></h2><table id="dead-letters"></table></section>
</main>
<script>
const TOKEN = document.querySelector('meta[name="qexec-token"]').content;
const esc = (v) => v === null || v === undefined ? "-" : String(v).replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const NUMERIC = new Set(["amount", "entry_price", "mark_price", "unrealized_pnl", "leverage", "quantity",
  "exit_price", "realized_pnl", "latency_ms", "age_s", "headroom_pct"]);
function table(id, rows, columns, rowAttr, cellClass) {
  const head = "<tr>" + columns.map(([key, title]) => `<th>${esc(title)}</th>`).join("") + "</tr>";
  const body = rows.map((row) => `<tr ${rowAttr ? rowAttr(row) : ""}>` + columns.map(([key]) => {
    const cls = [NUMERIC.has(key) ? "num" : "", cellClass ? cellClass(key, row) : ""].join(" ").trim();
    return `<td class="${cls}" data-col="${key}">${esc(row[key])}</td>`;
  }).join("") + "</tr>").join("");
  document.getElementById(id).innerHTML = head + (body || `<tr><td class="muted">(none)</td></tr>`);
}
const GUARD_CLASS = {placed: "green", missing: "red", repairing: "red"};
const STATUS_CLASS = {filled: "green", partially_filled: "green", rejected: "red", failed: "red", canceled: "red"};
function render(s) {
  const venue = s.venue || {};
  document.getElementById("venue-host").textContent = venue.host || "?";
  const halt = document.getElementById("halt-state");
  if (s.halt) { halt.textContent = "HALTED" + (s.halt.flatten ? " + FLATTEN" : ""); halt.className = "badge bad";
    halt.title = s.halt.reason || ""; }
  else if (Object.keys(s.halted_accounts || {}).length) {
    halt.textContent = "HALTED: " + Object.keys(s.halted_accounts).join(", "); halt.className = "badge bad";
    halt.title = Object.entries(s.halted_accounts).map(([name, r]) => name + ": " + (r.reason || "")).join("; "); }
  else { halt.textContent = "TRADING"; halt.className = "badge ok"; halt.title = ""; }
  const unprotected = s.unprotected || {positions: []};
  const oldest = document.getElementById("unprotected-oldest");
  oldest.textContent = unprotected.oldest_s === null || unprotected.oldest_s === undefined ? "all positions protected"
    : `UNPROTECTED ${unprotected.positions.length} position(s), oldest ${unprotected.oldest_s} s`;
  oldest.className = unprotected.oldest_s === null || unprotected.oldest_s === undefined ? "" : "badge bad";
  table("positions", venue.positions || [], [["symbol", "symbol"], ["direction", "direction"],
    ["amount", "amount"], ["entry_price", "entry"], ["mark_price", "mark"], ["unrealized_pnl", "unrealised PnL"],
    ["leverage", "leverage"], ["stop_loss", "SL"], ["sl_state", "SL state"], ["take_profit", "TP"],
    ["tp_state", "TP state"], ["tracked", "tracked"]],
    (row) => `data-symbol="${esc(row.symbol)}" data-direction="${esc(row.direction)}"`,
    (key, row) => key.endsWith("_state") ? GUARD_CLASS[row[key]] || "" :
      key === "unrealized_pnl" ? (Number(row[key]) < 0 ? "red" : "green") : "");
  table("results", s.results || [], [["published_at", "published"], ["intent_id", "intent"], ["symbol", "symbol"],
    ["action", "side"], ["status", "status"], ["entry_price", "price"], ["quantity", "quantity"],
    ["latency_ms", "latency ms"], ["reason", "reason"]],
    (row) => `data-intent-id="${esc(row.intent_id)}"`,
    (key, row) => key === "status" ? STATUS_CLASS[row.status] || "" : "");
  table("exits", s.exits || [], [["closed_at", "closed"], ["symbol", "symbol"], ["side", "side"], ["reason", "reason"],
    ["quantity", "quantity"], ["exit_price", "price"], ["realized_pnl", "PnL"], ["latency_ms", "latency ms"]]);
  const inflight = s.inflight || {intents: []};
  document.getElementById("inflight-count").textContent = `(${Math.max(inflight.count || 0, 0)})`;
  table("inflight", inflight.intents || [], [["intent_id", "intent"], ["age_s", "placed s ago"]]);
  const letters = s.dead_letters || {last: []};
  document.getElementById("dlq-count").textContent = `(${letters.count || 0})`;
  table("dead-letters", letters.last || [], [["id", "entry"], ["entry_id", "intent entry"], ["error", "error"]]);
  health(s, venue);
}
function health(s, venue) {
  const stream = venue.stream, beat = s.heartbeat, limits = (s.limits || {}).windows || {};
  const items = [
    ["venue", venue.ok ? `<span class="green">answering</span> ${esc(venue.url)}` :
      `<span class="red">NOT ANSWERING</span> ${esc(venue.error)}`],
    ["mode / host", `${esc(venue.mode || s.mode)} / ${esc(venue.host)}`],
    ["clock offset", venue.clock_offset_ms === undefined ? "-" : `${esc(venue.clock_offset_ms)} ms`],
    ["stream", !stream ? "off (QEXEC_USE_STREAMS)"
      : stream.live ? `<span class="green">up</span> for ${esc(stream.live_for_s)} s`
      : `<span class="red">down</span>`],
    ["rate budget", Object.entries(limits).map(([name, w]) => `${esc(name)} ${esc(w.used)}/${esc(w.limit)} `
      + `(<span class="${w.headroom_pct < 20 ? "red" : ""}">${esc(w.headroom_pct)} % left</span>)`).join(" · ")
      + ((s.limits || {}).paused_s ? ` · <span class="red">paused ${esc(s.limits.paused_s)} s</span>` : "")],
    ["beat heartbeat", !beat ? "none recorded"
      : `${esc(beat.age_s)} s ago, ` + (beat.ok ? "ok" : `<span class="red">${esc(beat.error)}</span>`)],
    ["redis", s.redis && s.redis.ok ? "ok" : `<span class="red">${esc(s.redis && s.redis.error)}</span>`],
  ];
  document.getElementById("health").innerHTML = items.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("");
}
async function act(name, question) {
  if (!window.confirm(question)) return;
  const reason = name === "resume" ? "" : "operator";
  const status = document.getElementById("action-status");
  status.textContent = `${name}…`;
  const answer = await fetch(`/api/${name}`, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Qexec-Token": TOKEN}, body: JSON.stringify({reason})});
  const body = await answer.json().catch(() => ({}));
  status.textContent = `${name}: ${answer.ok ? "done" : "FAILED"} ${JSON.stringify(body)}`;
}
document.getElementById("halt").onclick = () => act("halt", "Halt? Every new intent is rejected until resumed.");
document.getElementById("flatten").onclick = () =>
  act("flatten", "Halt AND FLATTEN? This cancels every open order and closes every position at the venue.");
document.getElementById("resume").onclick = () => act("resume", "Resume? New intents are placed again.");
const events = new EventSource("/events");
events.addEventListener("snapshot", (e) => { render(JSON.parse(e.data));
  document.getElementById("live").textContent = "live " + new Date().toLocaleTimeString(); });
events.onerror = () => { document.getElementById("live").textContent = "disconnected, retrying…"; };
</script>
</body>
</html>
"""


def page(*, token: str, user: str, mode: str) -> str:
    """The page for one user: its action token, and the user and mode shown in its header."""
    return (
        _PAGE.replace("__TOKEN__", html.escape(token))
        .replace("__USER__", html.escape(f"user {user}" if user != "-" else "loopback, no login"))
        .replace("__MODE__", html.escape(mode))
    )
