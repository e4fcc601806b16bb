"""Prometheus metrics of the token broker, served on the hub's ``/hub/metrics``.

Defined at import time in the default registry, which JupyterHub's metrics handler exports.
Labels never carry user names or token material, only fixed outcome words.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOKEN_REFRESH = Counter(
    "afhub_token_refresh",
    "Upstream refresh-token grants sent to the identity provider (after merging).",
)

TOKEN_REFRESH_FAILURES = Counter(
    "afhub_token_refresh_failures",
    "Upstream refresh-token grants that failed, by reason "
    "(login_required: grant refused; unavailable: provider unreachable or erroring).",
    ["reason"],
)

TOKEN_EXCHANGE = Counter(
    "afhub_token_exchange",
    "RFC 8693 token exchanges sent to the identity provider, by outcome.",
    ["outcome"],
)

TOKEN_BROKER_DURATION = Histogram(
    "afhub_token_broker_request_duration_seconds",
    "Latency of token broker requests from user servers, by HTTP status.",
    ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf")),
)

TOKEN_REVOCATIONS = Counter(
    "afhub_token_revocations",
    "RFC 7009 revocation calls made at logout, by outcome.",
    ["outcome"],
)
