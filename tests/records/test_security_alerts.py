"""SecurityAlert consumer: logged with the source pseudonymized, counted per bounded rule,
hostile detail text neutralised; wired on the runtime's bus."""

from __future__ import annotations

import structlog

from callward.config import CallwardConfig, StorageConfig
from callward.events import SecurityAlert
from callward.privacy.pseudonym import Pseudonymizer
from callward.records.security_alerts import SecurityAlertLog


def test_alerts_are_logged_redacted_and_counted() -> None:
    sink = SecurityAlertLog(Pseudonymizer(b"k" * 32))
    with structlog.testing.capture_logs() as logs:
        sink.handle(SecurityAlert(ts=1.0, node="edge-1", seq=1, rule="password-guessing",
                                  source="198.51.100.7", detail="x\x1b[2J\x00y sip:+15551234@evil"))  # fmt: skip
        sink.handle(SecurityAlert(ts=2.0, node="edge-1", seq=2, rule="made\nup", source="alice"))
    assert sink.counts == {"password-guessing": 1, "other": 1}
    text = repr(logs)
    assert "198.51.100.7" not in text and "alice" not in text
    assert "\x1b" not in text and "\x00" not in text and "made\nup" not in text
    first = logs[0]
    assert first["source_pseudonym"].startswith("src:") and first["rule"] == "password-guessing"
    # the same source gets the same pseudonym (correlation without the address)
    sink.handle(SecurityAlert(ts=3.0, node="e", seq=3, rule="password-guessing",
                              source="198.51.100.7"))  # fmt: skip
    assert sink.recent[0].source == sink.recent[2].source


async def test_runtime_subscribes_the_alert_log(tmp_path) -> None:
    from callward.runtime import open_runtime

    cfg = CallwardConfig(storage=StorageConfig(data_dir=tmp_path))
    rt = await open_runtime(cfg, cdr_writer=False)
    try:
        await rt.bus.publish(SecurityAlert(ts=1.0, node="n", seq=1, rule="options-sweep",
                                           source="203.0.113.9"))  # fmt: skip
        assert rt.security_alerts is not None
        assert rt.security_alerts.counts == {"options-sweep": 1}
    finally:
        await rt.close()
