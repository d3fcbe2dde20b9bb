"""A phone behind NAT, built from Linux network namespaces by the test that needs it.

Topology (the public side is the root namespace, where the edge, coturn and the far phone
listen on :attr:`NatLab.public`)::

    root 10.25.1.1 -- 10.25.1.2 [wifi NAT, masquerade] 192.168.25.1 -- 192.168.25.2 [phone]
    root 10.25.2.1 -- 10.25.2.2 [cell NAT, masquerade] 100.64.25.1  -- 100.64.25.2  [phone]

The phone namespace starts on Wi-Fi (default route via the wifi NAT); :meth:`NatLab.to_cellular`
drops the Wi-Fi address and routes via the cellular NAT, so the phone's address *and* its public
(NAT) address change, as after Wi-Fi -> cellular. The root namespace has no route to either
private network: everything the phone sends is masqueraded. Code runs inside the phone namespace
on a :class:`NamespaceLoop` (a thread moved there with setns(2), with its own event loop).

Names carry ``tag`` so parallel labs do not collide; setup removes leftovers of the same tag.
Needs root, iproute2 and nftables; :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why a netns lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2/nftables) not installed"
    probe = subprocess.run(["ip", "netns", "add", "cwprobe25"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()[:80]}"
    subprocess.run(["ip", "netns", "del", "cwprobe25"], capture_output=True)
    return None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class NatLab:
    tag: str = "25"
    mtu: int = 1500

    @property
    def public(self) -> str:
        """Where servers in the root namespace listen (the Wi-Fi uplink's root side)."""
        return f"10.{self.tag}.1.1"

    @property
    def wifi_nat(self) -> str:
        return f"10.{self.tag}.1.2"  # the phone's public address on Wi-Fi

    @property
    def cell_nat(self) -> str:
        return f"10.{self.tag}.2.2"  # ... and on cellular

    @property
    def wifi_addr(self) -> str:
        return f"192.168.{self.tag}.2"

    @property
    def cell_addr(self) -> str:
        return f"100.64.{self.tag}.2"

    @property
    def phone_ns(self) -> str:
        return f"cw{self.tag}phone"

    def _ns(self, name: str) -> str:
        return f"cw{self.tag}{name}"

    def setup(self) -> None:
        self.teardown()
        t = self.tag
        phone = self.phone_ns
        for ns in (phone, self._ns("wifi"), self._ns("cell")):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for i, (name, pub, priv) in enumerate(
            (("wifi", f"10.{t}.1", f"192.168.{t}"), ("cell", f"10.{t}.2", f"100.64.{t}"))
        ):
            nat = self._ns(name)
            up, down = f"cw{t}{name[0]}", f"cw{t}{name[0]}p"  # uplink / phone side
            _sh("ip", "link", "add", f"{up}0", "type", "veth", "peer", "name", f"{up}1")
            _sh("ip", "link", "set", f"{up}1", "netns", nat)
            _sh("ip", "addr", "add", f"{pub}.1/24", "dev", f"{up}0")
            _sh("ip", "link", "set", f"{up}0", "mtu", str(self.mtu), "up")
            _sh("ip", "-n", nat, "addr", "add", f"{pub}.2/24", "dev", f"{up}1")
            _sh("ip", "-n", nat, "link", "set", f"{up}1", "mtu", str(self.mtu), "up")
            _sh("ip", "-n", nat, "link", "add", f"{down}0", "type", "veth", "peer", "name",
                f"{down}1")  # fmt: skip
            _sh("ip", "-n", nat, "link", "set", f"{down}1", "netns", phone)
            _sh("ip", "-n", nat, "addr", "add", f"{priv}.1/24", "dev", f"{down}0")
            _sh("ip", "-n", nat, "link", "set", f"{down}0", "mtu", str(self.mtu), "up")
            _sh("ip", "-n", phone, "addr", "add", f"{priv}.2/24", "dev", f"{down}1")
            _sh("ip", "-n", phone, "link", "set", f"{down}1", "mtu", str(self.mtu), "up")
            _sh("ip", "-n", nat, "route", "add", "default", "via", f"{pub}.1")
            _sh("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = (
                "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
                f'  oifname "{up}1" masquerade\n }}\n}}\n'
            )
            subprocess.run(["ip", "netns", "exec", nat, "nft", "-f", "-"], input=rules,
                           check=True, capture_output=True, text=True)  # fmt: skip
            if i == 0:
                _sh("ip", "-n", phone, "route", "add", "default", "via", f"{priv}.1")

    def to_cellular(self) -> None:
        """Wi-Fi lost: its address goes away and the default route moves to the cellular NAT."""
        t = self.tag
        _sh("ip", "-n", self.phone_ns, "addr", "flush", "dev", f"cw{t}wp1")
        _sh("ip", "-n", self.phone_ns, "link", "set", f"cw{t}wp1", "down")
        _sh("ip", "-n", self.phone_ns, "route", "replace", "default", "via", f"100.64.{t}.1")

    def teardown(self) -> None:
        for ns in (self.phone_ns, self._ns("wifi"), self._ns("cell")):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for link in (f"cw{self.tag}w0", f"cw{self.tag}c0"):
            subprocess.run(["ip", "link", "del", link], capture_output=True)


class NamespaceLoop:
    """An event loop on a thread that lives in network namespace ``ns``: every socket, interface
    listing and route lookup made by coroutines run there happens inside the namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name=f"netns-{ns}", daemon=True)
        self._thread.start()
        self._ready.result(10)

    def _main(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{self.ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({self.ns})")
            finally:
                os.close(fd)
        except OSError as exc:
            self._ready.set_exception(exc)
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set_result(None)
        self.loop.run_forever()

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` in the namespace and await its result from the caller's loop."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
