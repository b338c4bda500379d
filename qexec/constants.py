"""Names other programs rely on, and every Redis key qexec writes, in one place."""

INTENT_STREAM = "quantum:stream:trade.intent"
RESULT_STREAM = "quantum:stream:trade.execution.res"
EXIT_STREAM = "quantum:stream:trade.exit"
PROTECTION_STREAM = "quantum:stream:trade.protection"  # never the result stream: one result per intent there
DLQ_SUFFIX = ".dlq"
CONSUMER_GROUP = "qexec"

# Per-intent state, keyed by intent id.
DISPATCH_KEY = "qexec:intent:{intent_id}:dispatch"  # stream entry / task id that started the chain
ORDER_KEY = "qexec:intent:{intent_id}:order"  # hash: the entry order's state machine
PLACE_LOCK_KEY = "qexec:intent:{intent_id}:place-lock"  # one place_order execution at a time
PUBLISHED_KEY = "qexec:intent:{intent_id}:published"  # the result entry id, once published
DUPLICATE_KEY = "qexec:intent:{intent_id}:duplicate:{owner}"  # a duplicate entry (or task), counted once
DEAD_LETTER_KEY = "qexec:dead-letter:{owner}"  # the DLQ entry id of a stream entry (or task), once written
# The bridge holding a consumer name of a stream's group (its token), with a TTL the bridge refreshes.
CONSUMER_LEASE_KEY = "qexec:consumer:{stream}:{group}:{consumer}"
HEARTBEAT_KEY = "qexec:heartbeat"  # hash: the last venue heartbeat (at, ok, error, dead_letters)
REDBEAT_PREFIX = "qexec:beat:"  # celery-redbeat's schedule and its lock
INFLIGHT_KEY = "qexec:inflight"  # sorted set: intents with an order placed and no result yet, by placed-at time
# sorted set: the same intents, by when their next confirm_fill must have started (epoch s); beat's takeover sends
# a fresh confirmation for one that is overdue (its chain's message lost with a worker)
CONFIRM_DUE_KEY = "qexec:confirm:due"
# sorted set: intents dispatched whose place_order has not started yet, by when it must have (epoch s), and a hash of
# their tickets: beat's takeover dispatches again one whose message was lost with a worker
PLACE_DUE_KEY = "qexec:place:due"
PLACE_DUE_TICKETS_KEY = "qexec:place:due:tickets"
METRICS_KEY = "qexec:metrics:{family}"  # hash per metric family: label value -> count, or a histogram's buckets
# Positions and protection, keyed by symbol and direction (LONG/SHORT).
POSITIONS_KEY = "qexec:positions"  # set of "SYMBOL:DIRECTION" qexec tracks
POSITION_KEY = "qexec:position:{symbol}:{direction}"  # hash: the tracked position and its protective orders
POSITION_LOCK_KEY = "qexec:position:{symbol}:{direction}:lock"  # one protect/monitor step at a time
ADOPT_HOLD_KEY = "qexec:symbol:{symbol}:entering"  # an entry is on its way: not a stranger's position to adopt
# sorted set: intents whose entry opening a position in this direction is on its way, by registration (server time)
ENTRY_ORDER_KEY = "qexec:symbol:{symbol}:entries:{direction}"
EXIT_PUBLISHED_KEY = "qexec:exit:{position_id}"  # the exit stream entry id, once published
PROTECTION_PUBLISHED_KEY = "qexec:intent:{intent_id}:protection"  # the protection event's entry id
# sorted set: tracked positions (SYMBOL:DIRECTION) known to lack a protective order the venue could not take yet
# (503s, timeouts), by epoch ms since then; after QEXEC_PROTECTION_GRACE_S the emergency action runs.
UNPROTECTED_KEY = "qexec:positions:unprotected"
# The event (repaired, or failed) that ends a position's (SYMBOL:DIRECTION) unprotected spell begun at that epoch ms.
PROTECTION_SPELL_KEY = "qexec:position:{key}:repaired:{since_ms}"

# Deployment-wide controls (qexec/venue/limiter.py, qexec/ops/halt.py).
LIMIT_COUNTER_KEY = "qexec:limits:{window}"  # hash: bucket number -> venue budget spent in it (weight or orders)
LIMIT_PAUSE_KEY = "qexec:limits:pause"  # set with the venue's Retry-After as TTL: no venue call until it expires
HALT_KEY = "qexec:halt"  # JSON {at, reason, flatten, by, where}: new intents are rejected (`halted`) while set
# The account's position mode as the venue last said (1 hedge, 0 one-way), with QEXEC_POSITION_MODE_TTL_S as its TTL:
# read by one process for the deployment (a 30-weight call), dropped when the venue refuses an order for the mode.
POSITION_MODE_KEY = "qexec:position-mode:{venue}"
HALT_ACCOUNT_KEY = "qexec:halt:account:{account}"  # the same for one account's intents only (`qexec halt --account`)
DEADMAN_ARMED_KEY = "qexec:deadman:armed"  # set: symbols whose venue countdown qexec renews (qexec/ops/deadman.py)
# Alerts (qexec/alerts.py, qexec/ops/notify.py): an event already alerted (SET NX, TTL: its repeat interval, else
# QEXEC_INTENT_STATE_TTL_S), and the alerts sent to a destination (its masked id) in one minute.
ALERT_EVENT_KEY = "qexec:alert:{event}"
ALERT_RATE_KEY = "qexec:alert-rate:{destination}:{minute}"
# hash per worker process running a feed: `live` (1/0), `live_for_s`; expires once the process stops reporting
FEED_STATE_KEY = "qexec:feed:{process}"
# A live worker process beats this key (qexec/liveness.py); one whose key is gone long enough is taken over.
NODE_ALIVE_KEY = "qexec:node:{node}:alive"
NODE_MISSING_KEY = "qexec:node:{node}:missing"  # when a node's beat was first seen missing (epoch ms)
# In the broker's Redis, beside kombu's `unacked` hash: delivery tag -> the node that holds the message.
BROKER_HOLDERS_KEY = "qexec:broker:holders"

# The paper exchange's built-in credentials (paper mode only; never valid anywhere else).
PAPER_API_KEY = "qexec-paper-key"
PAPER_API_SECRET = "qexec-paper-secret"  # noqa: S105 - a public, paper-only default
PAPER_PORT = 8800

# Accounts (README "Many accounts"): `default` trades with QEXEC_API_KEY and keeps every key's name above; another
# account's per-account state (positions, entries, protection spells, halt, dead-man, feed state, order counts) is the
# same key under `qexec:account:<name>:`. Per-intent keys need no prefix: a fan-out's intent ids are per account.
DEFAULT_ACCOUNT = "default"
ACCOUNT_PATTERN = r"^[a-z][a-z0-9_]{0,23}$"  # lower case: QEXEC_ACCOUNT_<NAME>_* holds it in upper case


def account_key(key: str, account: str) -> str:
    """`key` (formatted) for `account`: itself for `default`, else under `qexec:account:<account>:`."""
    if account == DEFAULT_ACCOUNT:
        return key
    return f"qexec:account:{account}:{key.removeprefix('qexec:')}"


def halt_key(account: str | None) -> str:
    """The kill switch's flag for every account (None), or for one account's intents only."""
    return HALT_KEY if account is None else HALT_ACCOUNT_KEY.format(account=account)


def account_named(name: str, account: str) -> str:
    """A name (a position's `SYMBOL:DIRECTION`, its id) as alerts and ids give it: itself for `default`, else
    `<account>/<name>`, so that two accounts' never meet in one de-duplication key."""
    return name if account == DEFAULT_ACCOUNT else f"{account}/{name}"


def paper_keys(account: str) -> tuple[str, str]:
    """The paper exchange's API key and secret for an account (`qexec up` serves each configured account with its
    own pair; paper mode only)."""
    if account == DEFAULT_ACCOUNT:
        return PAPER_API_KEY, PAPER_API_SECRET
    return f"{PAPER_API_KEY}-{account}", f"{PAPER_API_SECRET}-{account}"
