"""Shared fixtures: our own Redis, the paper exchange (a subprocess), and the pipeline processes."""

import os

# Tests never touch the machine's own Redis (127.0.0.1:6379). Anything in a test process that is not pointed at
# a server the tests started goes to a closed port and fails loudly; developers' QEXEC_* settings are ignored, all
# but the one saying which redis-server the tests start (QEXEC_EMBEDDED_REDIS, read by tests/redis_fixtures.py).
for _name in [n for n in os.environ if n.startswith("QEXEC_") and n != "QEXEC_EMBEDDED_REDIS"]:
    del os.environ[_name]
os.environ["QEXEC_REDIS_URL"] = "redis://127.0.0.1:9/15"

pytest_plugins = ("redis_fixtures", "paper_fixtures", "stack_fixtures", "position_helpers", "rabbit_fixtures")
