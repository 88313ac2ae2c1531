"""``SMSGATE_REDIS_URL``: one Redis server, or a Redis Cluster by its seed nodes.

A single server is a redis-py URL (``redis://``, ``rediss://``, ``unix://``).
A cluster is ``redis+cluster://[[user]:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS): any reachable node finds the others, so list
a few in case one is down. Pure parsing, so settings can check a URL without a
connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["ClusterUrl", "is_cluster_url", "parse_cluster_url"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """The parts of a cluster URL."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """Split a cluster URL; ``ValueError`` saying what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    rest, _, query = rest.partition("?")
    if query:
        raise ValueError("a cluster URL takes no ?options")
    netloc, _, path = rest.partition("/")
    # Cluster mode has one database: only an empty path or /0.
    if path not in ("", "0"):
        raise ValueError(f"a cluster has only database 0, not /{path}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for part in hosts.split(","):
        host, colon, port_text = part.strip().rpartition(":")
        if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{part.strip()!r} is not host:port (seed nodes: host:port,...)")
        nodes.append((host.strip("[]"), int(port_text)))
    return ClusterUrl(nodes, username, password, tls=scheme.lower() == "rediss+cluster")
