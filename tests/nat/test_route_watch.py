"""The route watch asks the kernel which source address reaches the edge and calls back once
when it differs from the phone's (the netns test drives a real Wi-Fi -> cellular change)."""

from __future__ import annotations

import asyncio

from callward.nat.route_watch import RouteWatch, local_address_toward


def test_kernel_source_address() -> None:
    assert local_address_toward(("127.0.0.1", 9)) == "127.0.0.1"
    assert local_address_toward(("0.0.0.0", 0)) in (None, "127.0.0.1")


async def test_calls_back_once_per_change() -> None:
    seen: list[str] = []

    async def on_change(addr: str) -> None:
        seen.append(addr)

    watch = RouteWatch(("127.0.0.1", 9), "192.0.2.99", on_change, interval=0.02)
    watch.start()
    await asyncio.sleep(0.2)
    await watch.stop()
    assert seen == ["127.0.0.1"] and watch.changes == 1 and watch.current == "127.0.0.1"
