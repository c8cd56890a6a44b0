"""Discovery of the router's prefill and decode replicas.

Three sources, each an object with `async resolve() -> Endpoints`:

- `StaticDiscovery`: fixed host:port lists from the command line.
- `DnsDiscovery`: the headless Services of a DisaggregatedDeployment,
  `NAME-prefill.NAMESPACE.svc` and `NAME-decode.NAMESPACE.svc`, whose A
  records are the ready pods' IPs. The resolver is a constructor argument
  so tests can answer with 127.0.0.x addresses instead of cluster DNS.
- `FileDiscovery`: a JSON file `{"prefill": [...], "decode": [...]}` that
  `disagg serve` rewrites (atomically, by rename) when it starts, stops or
  scales replicas.

`run_discovery` resolves on an interval and hands the result to the
pools; a failed resolution keeps the previous endpoints and is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Async function from a host name to its IPv4/IPv6 addresses.
Resolver = Callable[[str], Awaitable[list[str]]]


class DiscoveryError(Exception):
    """Endpoints could not be resolved this time; the previous ones stay."""


@dataclass(frozen=True)
class Endpoints:
    """host:port addresses of the replicas of each role."""

    prefill: tuple[str, ...] = field(default=())
    decode: tuple[str, ...] = field(default=())


def parse_address_list(text: str, option: str) -> tuple[str, ...]:
    """Parse "host:port,host:port" into addresses, raising ValueError naming the option."""
    addresses = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, separator, port = item.rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{option}: invalid address {item!r}; expected host:port, e.g. 127.0.0.1:50051"
            )
        addresses.append(item)
    return tuple(addresses)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StaticDiscovery:
    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints

    async def resolve(self) -> Endpoints:
        return self._endpoints


async def system_resolver(host: str) -> list[str]:
    """Resolve a host name with the system resolver (getaddrinfo)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
            # A headless Service with no ready pods has no records.
            return []
        raise
    return sorted({info[4][0] for info in infos})


class DnsDiscovery:
    """Replicas behind the headless Services NAME-prefill and NAME-decode."""

    def __init__(self, target: str, port: int, resolver: Resolver = system_resolver) -> None:
        name, separator, namespace = target.partition(".")
        if not separator or not name or not namespace or "." in namespace:
            raise ValueError(
                f"--discover: invalid target {target!r}; expected NAME.NAMESPACE, e.g. chat.default"
            )
        self.prefill_host = f"{name}-prefill.{namespace}.svc"
        self.decode_host = f"{name}-decode.{namespace}.svc"
        self._port = port
        self._resolver = resolver

    async def _addresses(self, host: str) -> tuple[str, ...]:
        try:
            ips = await self._resolver(host)
        except OSError as error:
            raise DiscoveryError(f"DNS lookup of {host} failed: {error}") from error
        return tuple(sorted(format_address(ip, self._port) for ip in ips))

    async def resolve(self) -> Endpoints:
        prefill, decode = await asyncio.gather(
            self._addresses(self.prefill_host), self._addresses(self.decode_host)
        )
        return Endpoints(prefill=prefill, decode=decode)


def write_endpoints_file(path: Path, endpoints: Endpoints) -> None:
    """Write an endpoints file atomically (a reader never sees half of it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(
        json.dumps({"prefill": list(endpoints.prefill), "decode": list(endpoints.decode)})
    )
    temporary.replace(path)


class FileDiscovery:
    """Replicas listed in a JSON file that another process rewrites."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    async def resolve(self) -> Endpoints:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise DiscoveryError(f"cannot read endpoints file {self.path}: {error}") from error
        if not isinstance(document, dict):
            raise DiscoveryError(
                f"endpoints file {self.path} must hold an object with prefill and decode lists"
            )
        roles = {}
        for role in ("prefill", "decode"):
            addresses = document.get(role, [])
            if not isinstance(addresses, list) or not all(
                isinstance(address, str) for address in addresses
            ):
                raise DiscoveryError(
                    f"endpoints file {self.path}: {role!r} must be a list of host:port strings"
                )
            try:
                roles[role] = parse_address_list(",".join(addresses), role)
            except ValueError as error:
                raise DiscoveryError(f"endpoints file {self.path}: {error}") from error
        return Endpoints(**roles)


async def apply_once(discovery, pools: dict) -> Endpoints | None:
    """Resolve once and update the pools; return None (and log) on failure."""
    try:
        endpoints = await discovery.resolve()
    except DiscoveryError as error:
        logger.warning("discovery failed, keeping the previous endpoints: %s", error)
        return None
    await pools["prefill"].set_endpoints(endpoints.prefill)
    await pools["decode"].set_endpoints(endpoints.decode)
    return endpoints


async def run_discovery(discovery, pools: dict, interval_s: float) -> None:
    """Resolve every `interval_s` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await apply_once(discovery, pools)
