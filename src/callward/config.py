"""Configuration: one YAML file validated by pydantic, with ``CALLWARD_<SECTION>__<FIELD>``
environment overrides. Every field is documented in docs/operations.md.

Each section belongs to the package that uses it; edit only your own section class.
Defaults run everything in one process on 127.0.0.1 with SQLite under ``./var/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from callward.errors import ConfigError

__all__ = [
    "CallwardConfig",
    "EdgeConfig",
    "MediaConfig",
    "PrivacyConfig",
    "QualityConfig",
    "RecordsConfig",
    "RetentionConfig",
    "SecurityConfig",
    "SipLimits",
    "StorageConfig",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SipLimits(_Section):
    """Hard limits applied by the SIP parser to every message (hostile-input defence)."""

    max_message_bytes: int = Field(65535, ge=256, description="whole message incl. body")
    max_headers: int = Field(256, ge=8, description="header fields per message")
    max_header_bytes: int = Field(8192, ge=64, description="one header field, after unfolding")
    max_body_bytes: int = Field(60000, ge=0, description="message body")


class StorageConfig(_Section):
    """Where data lives. Embedded defaults; URLs switch on the scale-out stores."""

    data_dir: Path = Path("var")
    postgres_url: str | None = None  # e.g. postgresql://127.0.0.1:5432/test
    redis_url: str | None = None  # e.g. redis://127.0.0.1:6379/0
    nats_url: str | None = None  # e.g. nats://127.0.0.1:4222
    nats_stream: str = Field("CALLWARD_EVENTS", description="JetStream stream of the events")
    nats_prefix: str = Field("callward.events", description="subjects <prefix>.<tenant>.<kind>")


class EdgeConfig(_Section):
    """SIP edge (proxy/registrar). Owned by callward.edge."""

    listen: list[str] = Field(default_factory=lambda: ["udp:127.0.0.1:5060"])
    realm: str = "callward.local"
    node_id: str = "edge-1"
    domains: list[str] = Field(default_factory=list, description="SIP domains we serve")
    routes: dict[str, str] = Field(default_factory=dict, description="user -> SIP URI")
    upstreams: list[str] = Field(default_factory=list, description="SIP URIs, failover order")
    auth: bool = True
    subscribers: str = Field("sqlite:var/subscribers.sqlite", description="or postgresql://")
    location: str = Field("memory", description="'memory' or redis://host:port/db")
    location_prefix: str = "callward"
    auth_secret: str | None = Field(None, description="shared nonce/flow-token key")
    # Digest challenges offered, in order. SIPp, sipsak and baresip 1.0 (libre) fail when a
    # SHA-256 challenge is present at all, so the default is MD5; stored HA1s cover both.
    algorithms: list[str] = Field(default_factory=lambda: ["MD5"])
    nonce_ttl: float = Field(600.0, gt=0)
    min_expires: int = Field(60, ge=1)
    max_expires: int = Field(7200, ge=1)
    default_expires: int = Field(3600, ge=1)
    record_route: bool = True
    t1: float = Field(0.5, gt=0, description="RFC 3261 T1 seconds")
    timer_c: float = Field(180.0, gt=0)
    blacklist_seconds: float = Field(30.0, ge=0)
    session_expires: int = Field(1800, ge=0, description="RFC 4028, 0 = do not insert")
    min_se: int = Field(90, ge=90)
    trusted: list[str] = Field(default_factory=list, description="hosts/host:port trusted")
    untrusted: list[str] = Field(default_factory=list, description="peers to hide topology from")
    default_region: str = "US"
    tenant_regions: dict[str, str] = Field(default_factory=dict)
    tenant_domains: dict[str, list[str]] = Field(
        default_factory=dict,
        description="tenant -> its SIP domains; a subscriber registers and calls only as its own",
    )
    rate_limit: float = Field(0.0, ge=0, description="requests/s per source, 0 = off")
    rate_burst: int = Field(200, ge=1)
    max_connections: int = Field(4096, ge=1)
    max_setup_calls: int = Field(
        2000, ge=1, description="INVITEs in setup above which new ones get 503 + Retry-After"
    )
    max_backlog: float = Field(
        0.25, gt=0, description="seconds of receive backlog/loop lag above which INVITEs shed"
    )
    max_transactions: int = Field(200_000, ge=100, description="hard cap (memory bound)")
    srtp_policy: Literal["optional", "untrusted", "always"] = Field(
        "optional", description="488 for plain-RTP offers: from untrusted sources, or always"
    )
    security_admission: bool = Field(
        True, description="per-source/account/tenant admission buckets (docs/security.md)"
    )
    idle_timeout: float = Field(600.0, gt=0)
    # Slowloris defences for TCP/TLS/WS (docs/security.md, callward.sip.connection_guard)
    max_connections_per_ip: int = Field(512, ge=1, description="stream connections per IP")
    max_pending_per_ip: int = Field(
        16, ge=1, description="connections per IP with no complete SIP message yet"
    )
    max_pending: int = Field(256, ge=1, description="such connections in all (oldest evicted)")
    handshake_timeout: float = Field(5.0, gt=0, description="TLS/WebSocket handshake deadline")
    first_message_timeout: float = Field(10.0, gt=0, description="accept → first SIP message")
    message_timeout: float = Field(20.0, gt=0, description="first byte → end of each message")
    metrics_listen: str | None = Field(None, description="host:port for /metrics")
    tls_cert: str | None = None
    tls_key: str | None = None


class MediaConfig(_Section):
    """Media plane and relay. Owned by callward.media / callward.relay."""

    rtp_port_min: int = Field(20000, ge=1024, le=65534, description="relay media ports")
    rtp_port_max: int = Field(29999, ge=1025, le=65535)
    dscp_media: int = Field(46, ge=0, le=63, description="DSCP of relayed media (46 = EF)")
    dscp_signaling: int = Field(34, ge=0, le=63)
    relay_node_id: str = "relay-1"
    relay_address: str = Field("127.0.0.1", description="media address the relay binds/advertises")
    ng_listen: str = Field("127.0.0.1:22222", description="relay ng control socket HOST:PORT")
    rtp_timeout_s: float = Field(30.0, gt=0, description="silence on both legs ends a call")
    hold_timeout_s: float = Field(3600.0, gt=0, description="the same while on hold")
    stats_interval_s: float = Field(5.0, gt=0, description="MediaStats period per leg")
    max_calls: int = Field(10000, ge=1, description="concurrent calls per relay")
    # media anchoring by the edge (ng client side)
    relays: list[str] = Field(
        default_factory=list,
        description="ng relays the edge anchors through: 'HOST:PORT [weight=N]'",
    )
    anchor: str = Field("always", description="always | nat | never (when relays are set)")
    anchor_tenants: dict[str, str] = Field(default_factory=dict, description="tenant -> mode")
    anchor_routes: dict[str, str] = Field(
        default_factory=dict, description="Request-URI user prefix -> mode"
    )
    relay_ping_s: float = Field(5.0, gt=0, description="relay health-check period")
    relay_workers: int = Field(
        0, ge=0, le=32,
        description="callward serve: relay processes to spawn (0 = relay in serve's process)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _range(self) -> MediaConfig:
        if self.rtp_port_max - self.rtp_port_min < 3:
            raise ValueError("rtp_port_max must be at least rtp_port_min + 3")
        return self


class TenantQuality(_Section):
    """Per-tenant overrides of MOS alert thresholds and DPI sampling. Owned by callward.quality."""

    mos_warn: float | None = Field(None, ge=1.0, le=4.5)
    mos_critical: float | None = Field(None, ge=1.0, le=4.5)
    sample_rate: float | None = Field(None, ge=0.0, le=1.0)


class QualityConfig(_Section):
    """Call-quality analytics and alert thresholds. Owned by callward.quality."""

    mos_warn: float = 3.6
    mos_critical: float = 3.1
    base_delay_ms: float = Field(40.0, ge=0, description="assumed one-way network delay")
    rtp_timeout_s: float = Field(10.0, gt=0, description="media silence before BYE = timeout")
    pdd_warn_s: float = Field(5.0, gt=0, description="post-dial delay worth reporting")
    sample_rate: float = Field(0.01, ge=0.0, le=1.0, description="share of calls inspected live")
    header_bytes: int = Field(12, ge=0, le=64, description="RTP bytes DPI may keep per packet")
    hep_collector: str | None = Field(
        None, description="HOST:PORT of a Homer/heplify HEPv3 collector: edge SIP, relay RTCP"
    )
    hep_capture_id: int = Field(2001, ge=0, le=2**32 - 1, description="HEP capture agent id")
    tenants: dict[str, TenantQuality] = Field(default_factory=dict)


class RecordsConfig(_Section):
    """CDR pipeline, retention, cold storage. Owned by callward.records."""

    batch_size: int = 1000
    hot_days: int = Field(30, ge=1, description="CDRs older than this move to cold Parquet")
    grace_s: float = Field(0.0, ge=0, description="wait after a call ends for late stats")
    timeout_s: float = Field(3600.0, gt=0, description="write incomplete calls after this")
    jurisdictions: dict[str, list[str]] = Field(default_factory=dict)  # tenant -> rule sets
    default_jurisdictions: list[str] = Field(default_factory=lambda: ["GDPR"])


class PrivacyConfig(_Section):
    """Redaction, pseudonymization, consent. Owned by callward.privacy."""

    log_personal_data: bool = False
    kms: Literal["file", "pkcs11"] = Field(
        "file", description="master/pseudonym key source: key files or a PKCS#11 token"
    )
    pkcs11_lib: str | None = Field(None, description="e.g. /usr/lib/softhsm/libsofthsm2.so")
    pkcs11_token: str | None = Field(None, description="token label")
    pkcs11_key_label: str = "callward-master"
    pkcs11_pin_env: str = Field("CALLWARD_PKCS11_PIN", description="env var holding the PIN")
    record_calls: bool = Field(False, description="record calls whose parties consented")
    recording_jurisdiction: str = Field("GDPR", description="consent rule for recordings")
    tenant_recording_jurisdictions: dict[str, str] = Field(default_factory=dict)
    li_mediation: str | None = Field(None, description="HOST:PORT of the LI mediation (X2/X3)")
    boundary: Literal["strip", "pseudonymise", "off"] = Field(
        "strip", description="IMSI/IMEI/MSISDN in headers sent to edge.untrusted peers"
    )

    @field_validator("boundary", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    deployment: Path | None = Field(None, description="deployment YAML for dataflow/DPIA views")


class RetentionConfig(_Section):
    """Retention rule sets and the stores they govern (docs/privacy.md). Owned by
    callward.privacy. Which jurisdictions a tenant falls under stays in
    ``records.jurisdictions`` / ``records.default_jurisdictions``; a name no rule set defines
    is a ConfigError (fail closed)."""

    rule_sets: list[str] = Field(
        default_factory=lambda: ["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"],
        description="builtin:NAME or a YAML file per jurisdiction",
    )
    interval_s: float = Field(86400.0, gt=0, description="retention run period in serve")
    logs_dir: Path | None = Field(None, description="default <data_dir>/logs")
    captures_dir: Path | None = Field(None, description="default <data_dir>/captures")
    hep_dir: Path | None = Field(None, description="default <data_dir>/hep")


class TenantCallPolicy(_Section):
    """One tenant's calling rules (toll fraud, callward.edge.fraud.CallPolicy)."""

    international: bool = Field(False, description="may call other countries")
    premium: bool = Field(False, description="may call premium-rate ranges")
    max_concurrent: int = Field(8, ge=1, description="simultaneous calls per account")
    cps: float = Field(1.0, gt=0, description="call attempts per second per account")
    cps_burst: float = Field(5.0, ge=1, description="burst of call attempts")
    costly_per_hour: int = Field(20, ge=0, description="international+premium calls/account/h")
    national_prefix: str = Field("", description="trunk prefix of national numbers (0, 1...)")


class SecurityConfig(_Section):
    """Security policy shared by the faces and the edge. Owned by the security area
    (docs/security.md)."""

    metrics_token: str | None = Field(
        None, description="bearer token (or sha256:<hex>) required to read /metrics"
    )
    metrics_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="without a token, /metrics answers only these networks",
    )
    tls_min_version: str = Field("TLSv1.2", description="TLSv1.2 or TLSv1.3")
    tls_ciphers: str = Field(
        "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!RC4:!3DES",
        description="OpenSSL cipher string for TLS <= 1.2",
    )
    tls_ca_file: str | None = Field(None, description="CA bundle for peers' certificates")
    tls_crl_files: list[str] = Field(default_factory=list, description="PEM CRLs to enforce")
    tls_require_client_cert: bool = Field(False, description="mTLS: TLS clients need a cert")
    tls_client_cert: bool = Field(
        False, description="mTLS: present edge.tls_cert on outbound TLS (trunks, nodes)"
    )
    fraud_default: TenantCallPolicy = TenantCallPolicy()
    fraud_tenants: dict[str, TenantCallPolicy] = Field(
        default_factory=dict, description="tenant -> calling rules (else fraud_default)"
    )
    fraud_block_seconds: float = Field(900.0, gt=0, description="an account blocked for fraud")
    # STIR/SHAKEN (RFC 8224/8225/8588) in the edge's call path (docs/security.md)
    stir_sign_key: str | None = Field(None, description="PEM EC P-256 key: sign outgoing calls")
    stir_x5u: str | None = Field(None, description="URL of our certificate bundle (x5u)")
    stir_roots: list[str] = Field(
        default_factory=list, description="STI-CA root PEM files: verify incoming Identity"
    )
    stir_x5u_prefixes: list[str] = Field(
        default_factory=lambda: ["https://"], description="x5u URLs the edge may fetch"
    )
    stir_max_age: float = Field(60.0, gt=0, le=600, description="iat freshness (s)")
    stir_reject_failed: bool = Field(
        False, description="answer failed verification (403/436/437/438) instead of marking"
    )
    stir_tenant_numbers: dict[str, list[str]] = Field(
        default_factory=dict, description="tenant -> E.164 prefixes it owns (attestation A)"
    )
    stir_tenant_attest: dict[str, Literal["A", "B", "C"]] = Field(
        default_factory=dict, description="tenant -> highest attestation it may get"
    )


class IdentityConfig(_Section):
    """OAuth 2.0 for phones (RFC 8898 at the edge, bearer tokens on the web's phone API), the
    subscriber directory (AOR <-> MSISDN <-> subject), contact discovery and telemetry.
    Owned by callward.edge.bearer / callward.web.identity. Off until ``issuer`` is set."""

    issuer: str | None = Field(None, description="OAuth issuer URL (iss); None = Bearer off")
    jwks_uri: str | None = Field(None, description="default: <issuer>/jwks")
    audience: str = Field("sip:callward.local", description="aud the tokens must carry")
    sip_scope: str = Field("sip", description="scope needed to REGISTER/INVITE")
    leeway: float = Field(30.0, ge=0, le=300, description="clock skew allowed on exp/nbf/iat")
    jwks_refetch: float = Field(5.0, ge=0.1, description="min s between JWKS fetches (new kid)")
    jwks_max_age: float = Field(3600.0, ge=1, description="refetch the JWKS after this many s")
    tenants: list[str] = Field(default_factory=list, description="tenants accepted; [] = all")
    directory: str = Field("identity.sqlite", description="SQLite file, relative: in data_dir")
    discovery_salt: str | None = Field(None, description="server salt for contact discovery")
    discovery_daily_limit: int = Field(2000, ge=1, description="hashes looked up/subject/day")
    telemetry_daily_bytes: int = Field(262144, ge=1024, description="accepted/subject/day")
    emergency_numbers: list[str] = Field(
        default_factory=lambda: ["112", "911"], description="dialled numbers that are emergency"
    )
    emergency_route: str = Field("urn:service:sos", description="where they go (RFC 5031)")


class CallwardConfig(_Section):
    sip: SipLimits = SipLimits()
    storage: StorageConfig = StorageConfig()
    edge: EdgeConfig = EdgeConfig()
    media: MediaConfig = MediaConfig()
    quality: QualityConfig = QualityConfig()
    records: RecordsConfig = RecordsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    retention: RetentionConfig = RetentionConfig()
    security: SecurityConfig = SecurityConfig()
    identity: IdentityConfig = IdentityConfig()


def _env_value(key: str, value: str) -> Any:
    """A list or mapping field takes a YAML flow value (``[udp:0.0.0.0:5060]``, ``{cps: 2}``);
    anything else stays the string pydantic converts."""
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: not a YAML list/mapping: {str(exc).splitlines()[0]}") from None


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in environ.items():
        if not key.startswith("CALLWARD_") or "__" not in key:
            continue
        section, _, name = key[len("CALLWARD_") :].lower().partition("__")
        out.setdefault(section, {})[name] = _env_value(key, value)
    return out


def load_config(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> CallwardConfig:
    """Load YAML (if given), apply environment overrides, validate; raise one-line ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded
    for section, values in _env_overrides(dict(os.environ if environ is None else environ)).items():
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    try:
        return CallwardConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"config field {where}: {err['msg']}") from None
