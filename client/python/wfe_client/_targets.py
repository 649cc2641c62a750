"""Where a channel goes: one server, several servers, or a DNS name, balanced with gRPC round-robin.

``GrpcPersistenceProvider.connect`` takes ``"host:port"`` (one server, as before), several servers
as a list (``["10.0.0.1:50051", "10.0.0.2:50051"]``) or a comma-separated string
(``"10.0.0.1:50051,10.0.0.2:50051"``), or a gRPC target with a scheme (``"dns:///wfe.internal:50051"``,
``"ipv4:10.0.0.1:50051,10.0.0.2:50051"``). Several servers and the ``dns:``/``ipv4:``/``ipv6:``
targets get gRPC's ``round_robin`` policy: every call goes to the next server that is connected, a
server that dies is left out until it answers again, and so is one whose health is not SERVING (a
server that is stopping says so before it refuses calls: client-side health checking). Read-only
calls (the ``READS`` below) that fail with UNAVAILABLE (their server died under them) are tried
again, on another server, within their deadline; writes are not: one that failed in flight may or
may not have been applied, so the caller sees the error (``WfeError`` with ``code ==
"UNAVAILABLE"``) and decides.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidArgument

__all__ = ["READS", "Target", "resolve_target"]

_PACKAGE = "wfe.persistence.v1"

READS: dict[str, tuple[str, ...]] = {
    "WorkflowService": (
        "GetWorkflow",
        "GetWorkflowByName",
        "GetRunnableWorkflows",
        "BatchGetWorkflows",
    ),
    "EventService": ("GetEvent", "GetEvents", "GetRunnableEvents"),
    "SubscriptionService": ("GetSubscription", "GetSubscriptions", "GetFirstOpenSubscription"),
    "VisibilityService": ("ListWorkflows", "SearchWorkflows"),
    "StoreService": ("EnsureStoreExists",),
    "LifecycleService": ("WatchLifecycleEvents",),
}
"""The calls that change nothing (EnsureStoreExists: nothing twice), so a retry is safe. A watch
is retried only until the server has it in place (gRPC retries a stream until its first answer,
and the server answers its headers at once)."""

RETRY_ATTEMPTS = 3
"""Attempts of a read whose server died under it (gRPC caps this at 5)."""

_SCHEMES = ("dns:", "ipv4:", "ipv6:")
"""Targets given with these schemes are balanced (a DNS name may stand for several servers)."""

_PORTLESS_SCHEMES = ("unix:", "unix-abstract:", "vsock:")
"""Targets with these schemes name no TCP port (a socket path, a vsock CID:PORT): passed to gRPC as given."""


def service_config(policy: str = "round_robin") -> str:
    """The ``grpc.service_config`` of a balanced channel: round_robin, reads retried on UNAVAILABLE.

    ``pick_first`` instead: every call to the first server in the list that answers (the next one
    when it dies), for lifecycle events, which a server relays only to its own watchers."""
    names = [
        {"service": f"{_PACKAGE}.{service}", "method": method}
        for service, methods in READS.items()
        for method in methods
    ]
    config: dict[str, object] = {
        "loadBalancingConfig": [{policy: {}}],
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": RETRY_ATTEMPTS,
                    "initialBackoff": "0.02s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    if policy == "round_robin":
        # Client-side health checking: each connection watches its server's health (service "",
        # the server as a whole), and round-robin leaves out a server that is not SERVING. A server
        # told to stop reports NOT_SERVING first, so calls stop going to it while it drains instead
        # of being refused there (UNAVAILABLE) until it closes its connections.
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config, separators=(",", ":"))


@dataclass(frozen=True)
class Target:
    """A channel target and what goes with it."""

    target: str
    """What gRPC connects to."""
    shown: str
    """How messages name it (the addresses as the caller gave them)."""
    balanced: bool
    """Whether calls are spread over several servers (round_robin)."""
    authority: str | None = None
    """The ``host:port`` TLS verifies and ``:authority`` carries, when it is not the target's own."""

    def options(self, policy: str = "round_robin") -> list[tuple[str, str | int]]:
        options: list[tuple[str, str | int]] = []
        if self.balanced:
            options.append(("grpc.service_config", service_config(policy)))
            if policy == "pick_first":
                # Its own connections: with the process's shared ones pick_first would take
                # whichever the round-robin channel made ready, not the first of the list.
                options.append(("grpc.use_local_subchannel_pool", 1))
        if self.authority is not None:
            options.append(("grpc.default_authority", self.authority))
            options.append(("grpc.ssl_target_name_override", _split(self.authority)[0]))
        return options


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="address")


def _addresses(address: str | Sequence[str]) -> list[str]:
    if isinstance(address, str):
        parts = address.split(",") if not address.startswith(_SCHEMES) else [address]
    elif isinstance(address, Sequence) and not isinstance(address, (bytes, bytearray)):
        parts = list(address)
    else:
        raise TypeError(f"address: expected a string or a list of strings, got {type(address).__name__}")
    if not all(isinstance(part, str) for part in parts):
        raise TypeError("address: every address must be a string")
    stripped = [part.strip() for part in parts]
    if not stripped or not all(stripped):
        raise _invalid(f"address: expected HOST:PORT, or several separated by commas, got {address!r}")
    return stripped


def _split(address: str, given: str | None = None) -> tuple[str, str]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``InvalidArgument`` naming ``given`` (the
    address as the caller wrote it, default ``address``) when there is no port or it is not one.

    Without this gRPC would connect a port-less address to its default port (443) and the connect
    would wait ``connect_timeout`` for a server that is not there."""
    given = address if given is None else given
    bracketed = address.startswith("[") and "]" in address
    host, colon, port = address.rpartition(":")
    if not address or (colon and not host):
        raise _invalid(f"address {given!r}: expected HOST:PORT")
    if not colon or not port or (not bracketed and ":" in host) or (bracketed and not host.endswith("]")):
        # "localhost", "localhost:", "[::1]", "::1" (an IPv6 address without brackets has no port either).
        bare = address[1 : address.index("]")] if bracketed else address.removesuffix(":")
        fixed = f"[{bare}]:50051" if ":" in bare else f"{bare}:50051"
        before, _, after = given.rpartition(address)
        raise _invalid(f"address {given!r} has no port: a port is needed, as in {before + fixed + after!r}")
    if not port.isdigit():
        raise _invalid(f"address {given!r}: expected HOST:PORT, the port a number, got port {port!r}")
    if not 0 < int(port) < 65536:
        # gRPC would refuse the whole list (every server in it) and the connect would wait for nothing.
        raise _invalid(f"address {given!r}: port {port} is not between 1 and 65535")
    if bracketed:
        host = host[1:-1]
    return host, port


def _check_target(target: str) -> None:
    """Refuse one target (``HOST:PORT``, ``dns:[//AUTHORITY/]HOST:PORT``, ``ipv4:``/``ipv6:`` lists)
    without a port; ``unix:`` and the other port-less schemes pass as they are."""
    if target.startswith(_PORTLESS_SCHEMES):
        return
    if target.startswith("dns:"):
        name = target.removeprefix("dns:")
        if name.startswith("//"):
            name = name[2:].partition("/")[2]  # the authority (a DNS server) is not the target
        _split(name, target)
    elif target.startswith(("ipv4:", "ipv6:")):
        for part in target.partition(":")[2].split(","):
            _split(part, target)
    elif "://" not in target:  # another scheme: gRPC's to judge
        _split(target)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve_target(address: str | Sequence[str]) -> Target:
    """The target for ``address`` (see the module docstring). Several ``host:port`` with names are
    resolved here, once (a ``dns:///`` target is re-resolved by gRPC instead)."""
    parts = _addresses(address)
    shown = ",".join(parts)
    if len(parts) == 1:
        only = parts[0]
        _check_target(only)
        return Target(only, only, balanced=only.startswith(_SCHEMES))
    loop = asyncio.get_running_loop()
    found: list[tuple[int, str]] = []  # (family, "ip:port") of every address, in order
    families: list[set[int]] = []
    for part in parts:
        if part.startswith(_SCHEMES) or "://" in part:
            raise _invalid(f"address {part!r}: a target with a scheme cannot be one of several; give it alone")
    for host, port in [_split(part) for part in parts]:
        literal = _literal(host)
        if literal is not None:
            entries: list[tuple[int, str]] = [
                (socket.AF_INET if literal.version == 4 else socket.AF_INET6, str(literal))
            ]
        else:
            try:
                infos = await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except socket.gaierror as error:
                raise ConnectionError(f"cannot resolve {host!r} (in {shown}): {error}") from None
            entries = [(int(info[0]), str(info[4][0])) for info in infos]
        families.append({family for family, _ in entries})
        found.extend(
            (family, f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}") for family, ip in entries
        )
    family = socket.AF_INET if all(socket.AF_INET in f for f in families) else socket.AF_INET6
    if not all(family in f for f in families):
        raise _invalid(
            f"address {shown!r}: several servers must all have IPv4 or all IPv6 addresses; "
            "or give one DNS name as dns:///NAME:PORT"
        )
    scheme = "ipv4" if family == socket.AF_INET else "ipv6"
    chosen = list(dict.fromkeys(ip_port for f, ip_port in found if f == family))
    first_host, first_port = _split(parts[0])
    authority = f"[{first_host}]:{first_port}" if ":" in first_host else f"{first_host}:{first_port}"
    return Target(f"{scheme}:{','.join(chosen)}", shown, balanced=True, authority=authority)
