"""Who may call the web API, and what they may see.

The web face is a reader of the operator's most sensitive data set (CDRs). Two rules follow:

* every caller is a :class:`Principal` with an ``actor`` name that lands in the hash-chained
  access audit (GDPR Art. 5(2) accountability) and a ``role`` that decides what it may see;
* identifiers are pseudonymized by default (GDPR Art. 25 data protection by default); only the
  ``investigator`` role may ask for clear text, and only on a single audited record read with a
  reason and a ticket.

Tokens are bearer tokens (RFC 6750 §2.1, ``Authorization: Bearer <token>``) listed in a small
YAML file. With no tokens configured the app serves an anonymous *viewer*: fine on 127.0.0.1,
where ``callward web`` listens by default; an operator exposing it configures tokens.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callward.errors import ConfigError, PolicyError

__all__ = ["ANONYMOUS", "Principal", "Role", "WebSettings", "load_web_settings"]


class Role(StrEnum):
    VIEWER = "viewer"  # pseudonyms only
    INVESTIGATOR = "investigator"  # may reveal identifiers of one record, with reason + ticket
    DPO = "dpo"  # governance views: holds, consent counts, data flow, DPIA/DPA, audit status
    LI_OFFICER = "li-officer"  # lawful-interception views (warrants, LI trail); nobody else


class Principal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = Field(min_length=1, max_length=200, description="name recorded in the audit")
    role: Role = Role.VIEWER
    tenants: tuple[str, ...] = Field(
        (), description="tenants whose CDRs this principal may read; empty = all"
    )

    @property
    def may_reveal(self) -> bool:
        return self.role is Role.INVESTIGATOR

    def may_read(self, tenant: str) -> bool:
        return not self.tenants or tenant in self.tenants

    def scope(self, tenant: str | None) -> str | None:
        """The tenant filter a query of this principal runs with; PolicyError when the
        principal asks for a tenant it may not read or must name one of several."""
        if tenant is not None:
            if not self.may_read(tenant):
                raise PolicyError(f"tenant {tenant[:100]!r}: not readable by {self.actor}")
            return tenant
        if not self.tenants:
            return None
        if len(self.tenants) == 1:
            return self.tenants[0]
        raise PolicyError(f"tenant: choose one of {', '.join(self.tenants)} with ?tenant=")


ANONYMOUS = Principal(actor="web:anonymous", role=Role.VIEWER)


class WebSettings(BaseModel):
    """``tokens`` maps a token, or ``sha256:<hex>`` of it (so the file need not hold the
    secret), to the principal it authenticates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: dict[str, Principal] = Field(default_factory=dict)
    page_size: int = Field(20, ge=1, le=200, description="calls per dashboard page")
    summary_window: int = Field(500, ge=1, le=5000, description="CDRs behind /quality/summary")
    sessions: str = Field(
        "sqlite",
        pattern=r"^(memory|sqlite|rediss?://\S+)$",
        description="dashboard sessions: memory, sqlite (data_dir, shared by workers), redis://",
    )

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal for ``token``; ANONYMOUS when no tokens are configured and none given;
        None when the token is unknown (or missing while tokens are required)."""
        if not self.tokens:
            return ANONYMOUS if not token else None
        if not token:
            return None
        digest = "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        found: Principal | None = None
        presented = token.encode("utf-8", "replace")
        for key, principal in self.tokens.items():
            # A hashed entry matches only the token's hash (never the hash presented as a
            # token); every entry is compared in constant time, with no early exit.
            expect = digest.encode() if key.startswith("sha256:") else presented
            if hmac.compare_digest(key.encode(), expect):
                found = principal
        return found


def load_web_settings(path: Path | str | None) -> WebSettings:
    """Read the web settings YAML (``tokens:``, ``page_size:``); one-line ConfigError."""
    if path is None:
        return WebSettings()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read web settings: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return WebSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: web setting {where}: {err['msg']}") from None
