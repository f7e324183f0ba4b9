"""Hosts on one machine: each a Linux network namespace with its own address on a private
/24, joined by a bridge (the switch) inside the first one. The test process joins the same
LAN through one more veth, as an operator's machine would, so it reaches every host by
address. A namespace's loopback is its own: a process that assumes a server on localhost
finds nothing there. Needs root and iproute2's `ip netns`."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"`ip netns` is unavailable: {error}"
    return None


def ip(*arguments: str) -> None:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    role: str
    namespace: str
    address: str

    @property
    def wrap(self) -> list[str]:
        """Prefix of a command that runs on this host."""
        return ["ip", "netns", "exec", self.namespace]


class Lan:
    """`roles` become hosts .1, .2, ... of a free 10.x.y.0/24; the test process is .254.
    Names carry this process's id, so concurrent runs never share a namespace or a link."""

    def __init__(self, roles: Sequence[str]) -> None:
        tag = f"mh{os.getpid()}"
        self.subnet = _free_subnet(os.getpid())
        addresses = list(self.subnet.hosts())
        self.hosts = {
            role: Host(role, f"{tag}-{role}", str(addresses[index]))
            for index, role in enumerate(roles)
        }
        self.own_address = str(addresses[-1])
        self.own_link = tag  # the test process's end of the LAN, in this namespace
        self._created: list[str] = []

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def up(self) -> None:
        prefix = self.subnet.prefixlen
        switch, *others = self.hosts.values()
        for host in self.hosts.values():
            ip("netns", "add", host.namespace)
            self._created.append(host.namespace)
            ip("-n", host.namespace, "link", "set", "lo", "up")
        ip("-n", switch.namespace, "link", "add", "lan", "type", "bridge")
        ip("-n", switch.namespace, "link", "set", "lan", "up")
        ip("-n", switch.namespace, "addr", "add", f"{switch.address}/{prefix}", "dev", "lan")
        for host in others:
            self._plug(f"to-{host.role}", "eth0", host.namespace)
            ip("-n", host.namespace, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
            ip("-n", host.namespace, "link", "set", "eth0", "up")
        # The peer named by pid lands in this process's own namespace.
        self._plug("to-test", self.own_link, str(os.getpid()))
        ip("addr", "add", f"{self.own_address}/{prefix}", "dev", self.own_link)
        ip("link", "set", self.own_link, "up")

    def _plug(self, port: str, peer: str, peer_namespace: str) -> None:
        """A cable from the switch (port `port`) to `peer` in `peer_namespace`."""
        switch = next(iter(self.hosts.values())).namespace
        ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", peer,
           "netns", peer_namespace)  # fmt: skip
        ip("-n", switch, "link", "set", port, "master", "lan", "up")

    def down(self) -> None:
        """Remove every namespace (their links go with them, and so does each link's other
        end, the test process's included). Stop the hosts' processes first: a namespace
        with a process left in it outlives its name."""
        for namespace in reversed(self._created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self._created.clear()
        subprocess.run(["ip", "link", "del", self.own_link], capture_output=True, timeout=30)


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route of this machine's namespace overlaps, chosen from the
    pid (deterministic for a run, apart for concurrent runs)."""
    routes = json.loads(
        subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True,
                       text=True, check=True).stdout or "[]"
    )  # fmt: skip
    taken = [
        ipaddress.ip_network(route["dst"], strict=False)
        for route in routes
        if route.get("dst", "default") != "default" and route["dst"][0].isdigit()
    ]
    for step in range(4096):
        index = (seed + step) % 4096
        candidate = ipaddress.ip_network(f"10.{200 + index // 256}.{index % 256}.0/24")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for the test's LAN")
