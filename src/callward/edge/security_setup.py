"""Wire the security policies from ``callward.yaml`` into a running edge: tenant domains,
per-tenant calling rules (toll fraud) and STIR/SHAKEN. Everything derived from configuration
(country calling codes, parsed keys and certificates) is computed here, once, at load — never
per request. Called by :class:`~callward.edge.app.EdgeNode`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
import structlog

from callward.config import CallwardConfig, TenantCallPolicy
from callward.edge.admission import Rate
from callward.edge.fraud import CallPolicy, FraudGuard, FraudPolicy
from callward.errors import ConfigError

if TYPE_CHECKING:
    from callward.edge.proxy import EdgeCore
    from callward.edge.server import EdgeServer
    from callward.edge.stir import StirShaken

__all__ = ["configure_security", "fetch_certificate", "fraud_from_config", "stir_from_config"]

log = structlog.get_logger("callward.edge")


def country_code(region: str) -> str:
    """ITU calling code of an ISO 3166 region ("US" → "1"); ConfigError when unknown."""
    code = phonenumbers.country_code_for_region(region.upper())
    if not code:
        raise ConfigError(f"region {region!r}: not an ISO 3166 region phonenumbers knows")
    return str(code)


def _call_policy(rules: TenantCallPolicy, code: str) -> CallPolicy:
    return CallPolicy(
        international=rules.international,
        premium=rules.premium,
        max_concurrent=rules.max_concurrent,
        cps=Rate(rules.cps, rules.cps_burst),
        costly_per_hour=rules.costly_per_hour,
        country_code=code,
        national_prefix=rules.national_prefix,
    )


def fraud_from_config(cfg: CallwardConfig) -> FraudPolicy:
    """Per-tenant :class:`CallPolicy`, each with its home country code (``edge.tenant_regions``,
    else ``edge.default_region``) resolved here."""
    e, sec = cfg.edge, cfg.security
    default_code = country_code(e.default_region)
    tenants = set(sec.fraud_tenants) | set(e.tenant_regions)
    policies = []
    for tenant in sorted(tenants):
        region = e.tenant_regions.get(tenant)
        code = country_code(region) if region else default_code
        rules = sec.fraud_tenants.get(tenant, sec.fraud_default)
        policies.append((tenant, _call_policy(rules, code)))
    return FraudPolicy(
        default=_call_policy(sec.fraud_default, default_code),
        tenants=tuple(policies),
        block_seconds=sec.fraud_block_seconds,
    )


def stir_from_config(cfg: CallwardConfig) -> StirShaken | None:
    """STIR/SHAKEN when a signing key or STI-CA roots are configured (docs/security.md)."""
    sec = cfg.security
    if not (sec.stir_sign_key or sec.stir_roots):
        return None
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from callward.edge.stir import StirPolicy, StirShaken
    from callward.sip.tls import load_certificates

    key: ec.EllipticCurvePrivateKey | None = None
    if sec.stir_sign_key:
        if not sec.stir_x5u:
            raise ConfigError("security.stir_sign_key needs security.stir_x5u (the cert URL)")
        try:
            loaded = load_pem_private_key(Path(sec.stir_sign_key).read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"security.stir_sign_key: cannot load: {exc}") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ConfigError("security.stir_sign_key: an EC P-256 key is needed (ES256)")
        key = loaded
    roots = tuple(c for path in sec.stir_roots for c in load_certificates(path))
    return StirShaken(
        StirPolicy(
            signer_key=key,
            x5u=sec.stir_x5u,
            roots=roots,
            x5u_prefixes=tuple(sec.stir_x5u_prefixes),
            max_age=sec.stir_max_age,
            reject_failed=sec.stir_reject_failed,
            tenant_numbers=tuple((t, tuple(p)) for t, p in sec.stir_tenant_numbers.items()),
            tenant_attest=tuple(sec.stir_tenant_attest.items()),
            country_code=country_code(cfg.edge.default_region),
        )
    )


async def fetch_certificate(query: object) -> object:
    """Answer a :class:`~callward.edge.stir.FetchCertificate`: GET the PEM bundle in a worker
    thread (never on the event loop), at most 64 KiB, verified HTTPS when https."""
    import urllib.request

    from callward.edge.stir import FetchCertificate

    assert isinstance(query, FetchCertificate)

    def get() -> bytes:
        # the URL's scheme and prefix are allow-listed by the policy before it is asked
        with urllib.request.urlopen(query.url, timeout=FetchCertificate.timeout) as resp:
            return bytes(resp.read(65537))

    return await asyncio.to_thread(get)


class CertMonitor:
    """Certificate expiry as a metric and an alert (``sip/tls.py`` :func:`expiry_alerts`):
    ``callward_edge_tls_cert_expiry_seconds{role}`` for the edge's TLS certificate (``server``),
    the peers' CA bundle (``ca``) and the STI-CA roots (``sti-root``), checked at start and then
    every ``period`` seconds; one SecurityAlert per role within ``warn_days`` of expiry."""

    def __init__(
        self,
        core: EdgeCore,
        server: EdgeServer,
        named: list[tuple[str, list[Any]]],
        *,
        period: float = 3600.0,
        warn_days: float = 21.0,
    ) -> None:
        from prometheus_client import Gauge

        self.core, self.server, self.named = core, server, named
        self.period, self.warn_days = period, warn_days
        self.gauge = Gauge(
            "callward_edge_tls_cert_expiry_seconds",
            "seconds until the first certificate of the chain expires (negative: expired)",
            ["role"],
            registry=core.metrics.registry,
        )
        self._task: asyncio.Task[None] | None = None

    def check(self, now: float) -> None:
        from callward.sip.tls import expiry_alerts, seconds_until_expiry

        for role, certs in self.named:
            self.gauge.labels(role).set(seconds_until_expiry(certs, now))
        node = self.core.settings.node
        for alert in expiry_alerts(self.named, now, warn_days=self.warn_days, node=node):
            self.core.security.alert(alert)
        self.server.flush()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.check(time.time())
            await asyncio.sleep(self.period)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def cert_monitor(core: EdgeCore, server: EdgeServer, cfg: CallwardConfig) -> CertMonitor | None:
    from callward.sip.tls import load_certificates

    e, sec = cfg.edge, cfg.security
    named = [
        (role, load_certificates(path))
        for role, paths in (
            ("server", [e.tls_cert] if e.tls_cert else []),
            ("ca", [sec.tls_ca_file] if sec.tls_ca_file else []),
            ("sti-root", list(sec.stir_roots)),
        )
        for path in paths
    ]
    return CertMonitor(core, server, named) if named else None


def configure_security(
    core: EdgeCore, server: EdgeServer, cfg: CallwardConfig
) -> CertMonitor | None:
    """Apply the configuration's tenants, calling rules and STIR/SHAKEN to ``core``; returns
    the certificate-expiry monitor for the node to start (None without certificates)."""
    e = cfg.edge
    by_address = [t for t in e.trusted if not t.lower().startswith("tls:")]
    if by_address or (e.trusted and not cfg.security.tls_require_client_cert):
        # a trusted peer skips digest: on UDP/TCP its source address is all that proves it
        log.warning(
            "edge.trusted_by_address",
            peers=len(e.trusted),
            by_address=len(by_address),
            detail="prefer tls:HOST entries with security.tls_require_client_cert (mTLS)",
        )
    core.security.configure_tenants(e.tenant_domains, realm=e.realm)
    core.security.fraud = FraudGuard(fraud_from_config(cfg), node=e.node_id)
    core.stir = stir_from_config(cfg)
    if core.stir is not None:
        from callward.edge.stir import FetchCertificate

        server.answer_with(FetchCertificate, fetch_certificate)
    return cert_monitor(core, server, cfg)
