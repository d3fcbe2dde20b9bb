"""The phone API (``/api/v1/phone/...``): discovery salt, contact sync, preferences, presence
(:mod:`callward.web.presence`), emergency numbers, telemetry.

Enabled when ``identity.issuer`` is configured; otherwise every route answers 404. See
:mod:`callward.web.phone_api` for what is kept and what is not.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from callward.config import CallwardConfig
from callward.edge.bearer import BearerRejected, BearerVerifier
from callward.edge.bearer_io import JwksFetcher, policy_from_config
from callward.edge.directory import Identity, SqliteDirectory
from callward.errors import AuthError
from callward.records.telemetry import TelemetryStore
from callward.ua.psi import evaluate
from callward.web.app import WebState
from callward.web.phone_api import (
    DailyQuota,
    DiscoveryIndex,
    PrefsStore,
    PsiTable,
    decode_telemetry,
)
from callward.web.phone_state import PhoneStateDb
from callward.web.presence import MAX_WATCH, STATUSES, EmergencyInfo, PresenceStore
from callward.web.routes.api import _ERR, _known_query_only, state_of

__all__ = ["PhoneServices", "open_phone_services", "router"]

router = APIRouter(dependencies=[Depends(_known_query_only)], tags=["phone"])
_bearer = HTTPBearer(auto_error=False, description="the phone's OAuth access token")
MAX_PREFS_BYTES = 16 * 1024


@dataclass
class PhoneServices:
    fetcher: JwksFetcher
    directory: SqliteDirectory
    discovery: DiscoveryIndex
    discovery_quota: DailyQuota
    telemetry: TelemetryStore
    telemetry_quota: DailyQuota
    prefs: PrefsStore
    realm: str
    presence: PresenceStore
    emergency: EmergencyInfo
    psi: PsiTable

    def close(self) -> None:
        self.directory.close()
        self.telemetry.close()
        self.prefs.db.close()


def open_phone_services(config: CallwardConfig, data_dir: Path, state: WebState) -> PhoneServices:
    ident = config.identity
    policy = policy_from_config(ident)
    assert policy is not None
    directory_path = Path(ident.directory)
    if not directory_path.is_absolute():
        directory_path = data_dir / directory_path
    salt_file = data_dir / "discovery.salt"
    if ident.discovery_salt:
        salt = ident.discovery_salt.encode()
    elif salt_file.exists():
        salt = salt_file.read_bytes()
    else:
        salt = secrets.token_bytes(32)
        salt_file.touch(mode=0o600)
        salt_file.write_bytes(salt)
    directory = SqliteDirectory(directory_path)
    psi = PsiTable(directory, salt)
    shared = PhoneStateDb(data_dir / "phone-state.sqlite")  # prefs, presence, quotas: all workers
    return PhoneServices(
        fetcher=JwksFetcher(BearerVerifier(policy), state.clock),
        directory=directory,
        discovery=DiscoveryIndex(directory, salt),
        discovery_quota=DailyQuota(ident.discovery_daily_limit, shared, name="discovery"),
        telemetry=TelemetryStore(data_dir / "telemetry.sqlite"),
        telemetry_quota=DailyQuota(ident.telemetry_daily_bytes, shared, name="telemetry"),
        prefs=PrefsStore(shared),
        realm=policy.audience,
        presence=PresenceStore(shared),
        emergency=EmergencyInfo(tuple(ident.emergency_numbers), ident.emergency_route),
        psi=psi,
    )


def _services(request: Request) -> PhoneServices:
    svc: PhoneServices | None = getattr(request.app.state, "phone", None)
    if svc is None:
        raise HTTPException(404, "phone API not enabled (set identity.issuer)")
    return svc


async def current_subscriber(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The directory entry of the token's subject, checked on every request."""
    svc = _services(request)
    challenge = f'Bearer realm="{svc.realm}"'
    if cred is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": challenge})
    try:
        claims = await svc.fetcher.verify(cred.credentials)
    except BearerRejected as exc:
        hdr = f'{challenge}, error="{exc.error}"'
        status = 403 if exc.error == "insufficient_scope" else 401
        raise HTTPException(status, exc.reason, headers={"WWW-Authenticate": hdr}) from None
    except AuthError as exc:
        raise HTTPException(503, str(exc)) from None
    state = state_of(request)
    ident = await state.run(svc.directory.by_subject, claims.subject)
    if ident is None or ident.revoked or ident.tenant != claims.tenant:
        raise HTTPException(
            401, "subject not provisioned or revoked",
            headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )  # fmt: skip
    return ident


Subscriber = Annotated[Identity, Depends(current_subscriber)]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    salt_id: str = Field(min_length=1, max_length=64)
    since: int = Field(0, ge=0, description="directory version of the last sync (0: first)")
    added: list[Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]] = Field(
        default_factory=list, max_length=500, description="hash prefixes of new contacts"
    )


@router.get("/api/v1/phone/discovery", responses={401: _ERR, 404: _ERR})
async def get_discovery(request: Request, who: Subscriber) -> dict[str, Any]:
    """The salt and its id: the phone hashes numbers with it (see callward.privacy.discovery)."""
    svc = _services(request)
    return {"salt": svc.discovery.salt.hex(), "salt_id": svc.discovery.salt_id}


@router.post("/api/v1/phone/contacts/sync", responses={401: _ERR, 404: _ERR, 409: _ERR, 429: _ERR})
async def post_sync(request: Request, who: Subscriber, body: SyncRequest) -> dict[str, Any]:
    """Delta contact sync: hash prefixes of contacts added since the last sync in, matches and
    the AORs that changed since ``since`` out. Nothing of the request is stored."""
    svc = _services(request)
    state = state_of(request)
    if body.salt_id != svc.discovery.salt_id:
        raise HTTPException(409, "salt changed: fetch /api/v1/phone/discovery and hash again")
    if not svc.discovery_quota.take(who.subject, len(body.added), state.clock()):
        raise HTTPException(
            429, "daily discovery limit reached",
            headers={"Retry-After": str(svc.discovery_quota.retry_after(state.clock()))},
        )  # fmt: skip
    return await state.run(svc.discovery.sync, who, body.since, body.added)


@router.get("/api/v1/phone/prefs", responses={304: {}, 401: _ERR, 404: _ERR})
async def get_prefs(
    request: Request,
    who: Subscriber,
    if_none_match: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    version, doc = _services(request).prefs.get(who.subject)
    etag = f'"{version}"'
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(_json(doc), media_type="application/json", headers={"ETag": etag})


@router.put("/api/v1/phone/prefs", responses={401: _ERR, 404: _ERR, 412: _ERR, 428: _ERR})
async def put_prefs(
    request: Request,
    who: Subscriber,
    if_match: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    """Conditional write (RFC 9110 §13.1.1): ``If-Match`` must be the current ETag, else 412
    with the current document so the phone can merge (rules in callward.ua.cache)."""
    if if_match is None:
        raise HTTPException(428, "If-Match required (RFC 6585 §3)")
    raw = await request.body()
    if len(raw) > MAX_PREFS_BYTES:
        raise HTTPException(413, "preferences larger than 16 KiB")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise HTTPException(422, "body: not valid JSON") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, "body: expected a JSON object")
    try:
        want = int(if_match.strip().strip('"'))
    except ValueError:
        raise HTTPException(412, "If-Match: not an ETag of this resource") from None
    prefs = _services(request).prefs
    ok, version = prefs.put(who.subject, want, doc)
    if not ok:
        _, current = prefs.get(who.subject)
        return Response(_json(current), status_code=412, media_type="application/json",
                        headers={"ETag": f'"{version}"'})  # fmt: skip
    return Response(status_code=204, headers={"ETag": f'"{version}"'})


class PsiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(min_length=1, max_length=64)
    points: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        max_length=500, description="blinded points a·H(x), base64 of 33-byte SEC 1 points"
    )


@router.post("/api/v1/phone/contacts/psi",
             responses={401: _ERR, 404: _ERR, 409: _ERR, 422: _ERR, 429: _ERR})  # fmt: skip
async def post_psi(request: Request, who: Subscriber, body: PsiRequest) -> dict[str, Any]:
    """The OPRF step of private contact discovery (callward.ua.psi): ``b·P`` for each blinded
    point, under the daily discovery limit. Nothing of the request is kept."""
    svc, state = _services(request), state_of(request)
    if body.key_id != svc.psi.key_id:
        raise HTTPException(409, "key changed: fetch /api/v1/phone/contacts/psi-table again")
    if not svc.discovery_quota.take(who.subject, len(body.points), state.clock()):
        raise HTTPException(
            429, "daily discovery limit reached",
            headers={"Retry-After": str(svc.discovery_quota.retry_after(state.clock()))},
        )  # fmt: skip
    try:
        points = [base64.b64decode(p, validate=True) for p in body.points]
        out = await state.run(evaluate, svc.psi.key, points)
    except (ValueError, AuthError) as exc:
        raise HTTPException(422, f"points: {str(exc)[:80]}") from None
    return {"key_id": svc.psi.key_id, "evaluated": [base64.b64encode(p).decode() for p in out]}


@router.get("/api/v1/phone/contacts/psi-table", responses={304: {}, 401: _ERR, 404: _ERR})
async def get_psi_table(
    request: Request,
    who: Subscriber,
    if_none_match: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    """The tenant's sealed table (ETag: key id and directory version)."""
    svc, state = _services(request), state_of(request)
    etag = f'"{svc.psi.key_id}.{await state.run(svc.directory.version)}"'
    if _not_modified(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    etag, body = await state.run(svc.psi.document, who.tenant)
    return Response(body, media_type="application/json", headers={"ETag": etag})


def _not_modified(if_none_match: str | None, etag: str) -> bool:
    return if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]


class PresencePublish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(pattern="^(" + "|".join((*STATUSES, "offline")) + ")$")
    note: str = Field("", max_length=64)
    expires: int = Field(3600, ge=60, le=86400, description="seconds, as a PUBLISH Expires")


class PresenceWatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aors: list[Annotated[str, Field(min_length=3, max_length=200)]] = Field(
        max_length=MAX_WATCH, description="AORs of matched contacts (same tenant)"
    )


@router.put("/api/v1/phone/presence", status_code=204, responses={401: _ERR, 404: _ERR})
async def put_presence(request: Request, who: Subscriber, body: PresencePublish) -> Response:
    """Publish our own status for ``expires`` seconds (``offline`` withdraws it)."""
    svc, state = _services(request), state_of(request)
    if body.status == "offline":
        svc.presence.withdraw(who.tenant, who.aor)
    else:
        svc.presence.publish(who.tenant, who.aor, body.status, body.note,
                             state.clock() + body.expires)  # fmt: skip
    return Response(status_code=204)


@router.put("/api/v1/phone/presence/watch", responses={401: _ERR, 404: _ERR, 422: _ERR})
async def put_watch(request: Request, who: Subscriber, body: PresenceWatch) -> dict[str, Any]:
    """Which AORs we follow: each must be a live subscriber of our tenant (no probing of
    other tenants, no watching of numbers that are not subscribers)."""
    svc, state = _services(request), state_of(request)

    def unknown() -> int:
        found = [svc.directory.by_aor(a) for a in body.aors]
        return sum(1 for i in found if i is None or i.revoked or i.tenant != who.tenant)

    if (n := await state.run(unknown)) > 0:
        raise HTTPException(422, f"{n} AOR(s) are not subscribers of this tenant")
    return {"watch": svc.presence.watch(who.subject, body.aors)}


@router.get("/api/v1/phone/presence", responses={304: {}, 401: _ERR, 404: _ERR})
async def get_presence(
    request: Request,
    who: Subscriber,
    since: Annotated[int, Query(ge=0, description="version of the last answer (0: all)")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    """What changed among our watched AORs after ``since`` (an ETag-coherent delta)."""
    svc, state = _services(request), state_of(request)
    etag, body = svc.presence.delta(who.tenant, who.subject, since, state.clock())
    if _not_modified(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(_json(body), media_type="application/json", headers={"ETag": etag})


@router.get("/api/v1/phone/emergency", responses={304: {}, 401: _ERR, 404: _ERR})
async def get_emergency(
    request: Request,
    who: Subscriber,
    if_none_match: Annotated[str | None, Header(max_length=100)] = None,
) -> Response:
    """The emergency numbers and their route; the phone keeps them for ever (offline too)."""
    etag, body = _services(request).emergency.document()
    if _not_modified(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


_TELEMETRY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _ERR,
    404: _ERR,
    413: _ERR,
    415: _ERR,
    422: _ERR,
    429: _ERR,
}


@router.post("/api/v1/phone/telemetry", status_code=202, responses=_TELEMETRY_ERRORS)
async def post_telemetry(
    request: Request,
    who: Subscriber,
    content_encoding: Annotated[str | None, Header(max_length=40)] = None,
) -> dict[str, Any]:
    """A zstd batch of telemetry records; 429 + Retry-After past the per-day byte cap."""
    svc = _services(request)
    state = state_of(request)
    body = await request.body()
    if not svc.telemetry_quota.take(who.subject, len(body), state.clock()):
        raise HTTPException(
            429, "daily telemetry byte cap reached",
            headers={"Retry-After": str(svc.telemetry_quota.retry_after(state.clock()))},
        )  # fmt: skip
    try:
        records = decode_telemetry(body, content_encoding)
    except ValueError as exc:
        status = 415 if "Content-Encoding" in str(exc) else 422
        raise HTTPException(status, str(exc)) from None
    pseudonym = state.pseudonym(who.subject)
    stored = await state.run(svc.telemetry.add, who.tenant, pseudonym, records)
    return {"accepted": stored}


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
