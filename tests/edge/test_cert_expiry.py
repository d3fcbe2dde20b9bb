"""Certificate expiry as a metric and an alert on a running edge: the TLS listener's
certificate expires in 5 days, so ``callward_edge_tls_cert_expiry_seconds{role="server"}``
says so and a ``tls-cert-expiring`` SecurityAlert reaches the bus and the alert counter; a
healthy CA (a year left) raises nothing. Certificates made here; port 27095 (safe15's block)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig
from callward.edge.app import EdgeNode
from callward.events import InProcessBus, SecurityAlert


def _cert(tmp: Path, name: str, days: float, *, ca: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    c, k = tmp / f"{name}.pem", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))  # fmt: skip
    return c, k


async def test_expiring_server_certificate_is_a_metric_and_an_alert(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path, "edge", 5, ca=False)
    ca, _ = _cert(tmp_path, "ca", 365, ca=True)
    bus = InProcessBus()
    seen: list[SecurityAlert] = []

    async def on(ev: object) -> None:
        if isinstance(ev, SecurityAlert):
            seen.append(ev)

    bus.subscribe(on)
    node = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(listen=["tls:127.0.0.1:27095"], auth=False, tls_cert=str(cert),
                            tls_key=str(key)),
            security=SecurityConfig(tls_ca_file=str(ca)),
        ),
        bus=bus,
    )  # fmt: skip
    await node.start()
    try:
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        reg = node.metrics.registry
        left = reg.get_sample_value("callward_edge_tls_cert_expiry_seconds", {"role": "server"})
        assert left is not None and 4.9 * 86400 < left < 5.0 * 86400
        ca_left = reg.get_sample_value("callward_edge_tls_cert_expiry_seconds", {"role": "ca"})
        assert ca_left is not None and ca_left > 360 * 86400
        assert [(a.rule, a.source) for a in seen] == [("tls-cert-expiring", "server")]
        assert "days left" in seen[0].detail
        count = reg.get_sample_value(
            "callward_edge_security_alerts_total", {"rule": "tls-cert-expiring"}
        )
        assert count == 1
    finally:
        await node.stop()
