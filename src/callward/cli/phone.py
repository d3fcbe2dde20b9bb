"""``callward phone``: a CLI phone that makes and answers real calls (the ua core, driven from a
terminal): register with digest or an OAuth 2.0 Bearer token (``--oauth-issuer``, RFC 8898:
cli/phone_oauth.py) (the registration manager: refresh, backoff, keep-alives, RFC
5626 outbound with up to two edges, unregister on exit), call a SIP URI through an outbound
proxy, talk (``ua/talk.py``: a synthetic conversation, silence or a WAV file, sent as Opus or
G.711 at the negotiated ptime with DTX/VAD + comfort noise, FEC, RTCP and SRTP), hang up, print
what happened; ``--capture`` records the call with dumpcap and reports the bytes measured on
the wire against the planner. Bounded in time: every command ends by itself. ``phone login``
signs in through a browser (PKCE) and keeps the tokens encrypted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from callward.cli.exits import fail as _fail
from callward.cli.exits import hostport
from callward.cli.phone_contacts import register_contacts
from callward.cli.phone_dns import DNS_OPT, is_name
from callward.cli.phone_ice import IceFlags, ice_flags, ice_talk, start_ice
from callward.cli.phone_media import (
    LOSS_OPT,
    METERED_OPT,
    MIN_MOS_OPT,
    OPTIMISE_OPT,
    RTT_OPT,
    SEND_LOSS_OPT,
    MediaFlags,
    finish_capture,
    media_flags,
    media_report,
    start_capture,
    talk,
)
from callward.cli.phone_oauth import (
    CLIENT_OPT,
    ISSUER_OPT,
    KEYSTORE_OPT,
    OAUTH_USER_OPT,
    TOTP_OPT,
    OAuthOptions,
    oauth_options,
    register_login,
)
from callward.cli.phone_session import (
    bearer as _bearer,
)
from callward.cli.phone_session import (
    idle_budget as _budget,
)
from callward.cli.phone_session import (
    nonzero as _nonzero,
)
from callward.cli.phone_session import (
    open_media as _media,
)
from callward.cli.phone_session import (
    register_phone as _register,
)
from callward.cli.phone_session import (
    secure_call as _secure,
)
from callward.cli.phone_session import (
    token_report as _token_report,
)
from callward.errors import AuthError, CallwardError
from callward.nat.route_watch import local_address_toward

if TYPE_CHECKING:  # imported inside the commands (lazy CLI, cli/__init__.py)
    from callward.usage.budget import IdleBudget

phone_app = typer.Typer(help="A SIP phone: register, call, answer.", no_args_is_help=True)

_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
# --srtp → Phone.media_security: "none" is plain RTP (and accepts secure offers), "sdes" and
# "dtls" offer that kind and refuse plain RTP (488, and no plain media is ever sent).
_SRTP = {"none": "rtp", "sdes": "srtp", "dtls": "dtls"}


async def _call(
    target: str,
    user: str,
    password: str | None,
    proxy: tuple[str, int] | None,
    transport: str,
    seconds: float,
    register: bool,
    timeout: float,
    linger: float,
    srtp: str = "none",
    oauth: OAuthOptions | None = None,
    domain: str | None = None,
    flags: MediaFlags | None = None,
    capture: Path | None = None,
    proxy_name: str | None = None,
    dns_server: tuple[str, int] | None = None,
    keystore: Path | None = None,
    ice: IceFlags | None = None,
    emergency: tuple[str, list[str], str | None] | None = None,
) -> dict[str, Any]:
    from callward.ua import Phone
    from callward.ua.emergency import prepare_plan

    flags = flags or MediaFlags()
    dns: dict[str, Any] = {}
    if proxy_name is not None:  # RFC 3263 through the phone's coherent cache
        from callward.cli.phone_dns import resolve_proxies

        (proxy,), dns = await resolve_proxies([proxy_name], transport, dns_server, keystore)
    tokens, creds = await _bearer(oauth, timeout)
    # With a token the password is the IdP's: never used for digest (no weaker fallback).
    # Bind where the kernel routes toward the proxy (loopback for a loopback proxy).
    host = (local_address_toward(proxy) if proxy else None) or "127.0.0.1"
    phone = await Phone.start(
        user, host=host, transport=transport, password=None if oauth else password
    )
    phone.media_security = _SRTP[srtp]
    phone.media_prefs = flags.prefs()
    rtp = await _media(phone)
    agent = await start_ice(phone, ice, controlling=True) if ice is not None else None
    if emergency is not None:  # resolved now, so an emergency call needs no DNS later
        region, edges, location = emergency
        phone.emergency = await prepare_plan(region, edges, location=location)
    dtls: Any = None
    talked: Any = None
    out: dict[str, Any] = {"target_scheme": target.split(":", 1)[0], "transport": transport,
                           **dns}  # fmt: skip
    cap = await start_capture(capture, phone, rtp, target, proxy)
    try:
        if register:
            if proxy is None:
                raise CallwardError("--register needs --proxy (the registrar)")
            reg = await _register(phone, [proxy], domain, 600, timeout, creds)
            out["register_status"] = 200 if reg["registered_flows"] else 408
            if not reg["registered_flows"]:
                return out
        call = phone.dial(target, dest=proxy)
        status = await asyncio.wait_for(call.wait_final(), timeout)
        out["status"] = status
        out["setup_ms"] = None if call.setup_time is None else round(call.setup_time * 1000, 1)
        if status == 200 and agent is not None:  # media over the ICE pair (plain RTP for now)
            try:
                out.update(await ice_talk(call, agent, seconds, timeout))
            finally:
                out["bye_status"] = await asyncio.wait_for(call.hangup(), timeout)
            return out
        if status == 200:
            try:
                dtls = await _secure(call, rtp, out)
            except CallwardError:
                out["bye_status"] = await asyncio.wait_for(call.hangup(), timeout)
                raise
            talked = await talk(call, rtp, flags, 0, seconds)
            out["bye_status"] = await asyncio.wait_for(call.hangup(), timeout)
        out["rtp"] = media_report(rtp, talked)
        if flags.optimum is not None:
            out["optimised"] = flags.optimum
        out["media_port"] = rtp.local_addr[1]
        # Some peers (SIPp's uas) count a TCP close right after the BYE as a failed call.
        await asyncio.sleep(linger)
        if cap is not None:
            out["wire"] = await finish_capture(cap, rtp, talked, srtp != "none")
            cap = None
        return out
    finally:
        if agent is not None:
            await agent.close()
        out.update(_token_report(tokens))
        if cap is not None:
            await cap.__aexit__(None, None, None)
        if dtls is not None:
            dtls.close()
        rtp.close()
        await phone.close()
        if tokens is not None:
            await tokens.aclose()


async def _answer(
    listen: tuple[str, int],
    user: str,
    transport: str,
    calls: int,
    timeout: float,
    *,
    password: str | None = None,
    edges: list[tuple[str, int]] | None = None,
    domain: str | None = None,
    expires: int = 600,
    srtp: str = "none",
    oauth: OAuthOptions | None = None,
    flags: MediaFlags | None = None,
    ice_lite: bool = False,
    budget: IdleBudget | None = None,
    ice: IceFlags | None = None,
) -> dict[str, Any]:
    from callward.ua import Phone
    from callward.ua.ice_lite import IceLite

    flags = flags or MediaFlags()
    tokens, creds = await _bearer(oauth, timeout)
    phone = await Phone.start(
        user, host=listen[0], port=listen[1], transport=transport,
        password=None if oauth else password,
    )  # fmt: skip
    phone.media_security = _SRTP[srtp]
    phone.ice_lite = IceLite() if ice_lite else None  # browsers (WebRTC) need ICE
    phone.media_prefs = flags.prefs()
    rtp = await _media(phone)
    answered: list[dict[str, Any]] = []
    reg: dict[str, Any] = {}
    try:
        if edges:
            reg = await _register(phone, edges, domain, expires, timeout, creds, budget)
            if budget is not None:
                reg["idle_budget"] = budget.as_dict()
            if not reg["registered_flows"]:
                raise CallwardError(f"registration failed: no edge answered within {timeout:g} s")
        typer.echo(
            f"callward: answering on {transport}:{phone.local_addr[0]}:{phone.local_addr[1]}",
            err=True,
        )
        for _ in range(calls):
            if ice is not None:  # fresh candidates and credentials for each call
                await start_ice(phone, ice, controlling=False)
            call = await phone.next_call(timeout)
            info: dict[str, Any] = {}
            if phone.ice is not None:  # ICE: media on the nominated pair, then wait for BYE
                await call.ring()
                await call.answer()
                info.update(await ice_talk(call, phone.ice, 2.0, timeout))
                reason = await asyncio.wait_for(call.wait_ended(), timeout)
                answered.append({"status": call.status, "end_reason": reason, **info})
                continue
            dtls = None
            talking: asyncio.Task[Any] | None = None
            ended = asyncio.ensure_future(call.wait_ended())
            try:
                await call.ring()
                await call.answer()
                dtls = await _secure(call, rtp, info)
                # the answerer is party B of the conversation and talks until the BYE
                talking = asyncio.ensure_future(talk(call, rtp, flags, 1, None, ended))
            except CallwardError as exc:
                # Cancelled before we answered, or media security failed: hang up, report.
                info["error"] = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                with contextlib.suppress(CallwardError, TimeoutError):
                    await call.hangup(timeout=5)
            try:
                reason = await asyncio.wait_for(asyncio.shield(ended), timeout)
            finally:
                if not ended.done():
                    ended.cancel()
                if talking is not None:
                    talked = await talking
                    info["rtp"] = media_report(rtp, talked)
                    if flags.optimum is not None:
                        info["optimised"] = flags.optimum
            if dtls is not None:
                dtls.close()
            answered.append({"status": call.status, "end_reason": reason, **info})
        return {
            "answered": answered,
            "rtp_packets_received": rtp.counters.packets_received,
            **reg,
            **_token_report(tokens),
        }
    finally:
        rtp.close()
        if phone.ice is not None:
            await phone.ice.close()
        await phone.close()
        if tokens is not None:
            await tokens.aclose()


@phone_app.command("call")
def call_cmd(
    target: str = typer.Argument(..., help="SIP URI to call, e.g. sip:bob@127.0.0.1:5080"),
    user: str = typer.Option("callward", help="our user name (AOR user part)"),
    password: str | None = typer.Option(
        None, envvar="CALLWARD_PHONE_PASSWORD", help="digest password"
    ),
    proxy: str | None = typer.Option(
        None, help="outbound proxy / registrar HOST:PORT, or sip:DOMAIN (RFC 3263 lookup)"
    ),
    dns_server: str | None = DNS_OPT,
    transport: str = typer.Option("udp", help="udp, tcp, tls, ws or wss"),
    seconds: float = typer.Option(2.0, help="seconds of talk once answered"),
    register: bool = typer.Option(False, "--register", help="REGISTER with the proxy first"),
    domain: str | None = typer.Option(None, help="AOR domain (default: the --proxy address)"),
    timeout: float = typer.Option(32.0, help="give up on any step after this many seconds"),
    linger: float = typer.Option(0.0, help="keep the connection open this long after hang-up"),
    srtp: str = typer.Option(
        "none", help="media security: none (plain RTP), sdes or dtls (SRTP only, never plain)"
    ),
    oauth_issuer: str | None = ISSUER_OPT,
    client_id: str = CLIENT_OPT,
    oauth_user: str | None = OAUTH_USER_OPT,
    totp_secret_file: Path | None = TOTP_OPT,
    keystore: Path | None = KEYSTORE_OPT,
    codec: str = typer.Option("pcmu", help="voice codec to offer first: opus, pcmu or pcma"),
    bitrate: int = typer.Option(16000, help="Opus bit rate, bit/s (6000..64000)"),
    ptime: int = typer.Option(20, help="packet time we ask for, ms: 20, 40 or 60 (10: opus)"),
    dtx: bool = typer.Option(
        False, "--dtx", "--vad", help="Opus DTX, or G.711 VAD + RFC 3389 comfort noise"
    ),
    fec: bool = typer.Option(True, "--fec/--no-fec", help="Opus in-band FEC (RFC 7587)"),
    audio: str = typer.Option(
        "conversation", help="what to say: conversation (talk-spurt model), silence or a WAV"
    ),
    seed: int = typer.Option(1, help="seed of the synthetic conversation"),
    noise_suppression: bool = typer.Option(
        False, "--ns", help="speexdsp noise suppression before VAD/DTX"
    ),
    optimise: bool = OPTIMISE_OPT,
    loss: float = LOSS_OPT,
    rtt: float = RTT_OPT,
    min_mos: float = MIN_MOS_OPT,
    metered: bool = METERED_OPT,
    send_loss: float = SEND_LOSS_OPT,
    capture: Path | None = typer.Option(
        None, help="record the call with dumpcap (pcapng) and report bytes on the wire"
    ),
    region: str | None = typer.Option(
        None, help="emergency numbers of this region (GB, US, EU, ...): 112/911/999... dialled"
    ),
    emergency_edge: list[str] = typer.Option(
        [], help="emergency route HOST:PORT, resolved at start (needs --region)"
    ),
    location: str | None = typer.Option(
        None, help="RFC 6442 location URI sent only on emergency calls (https:, sip:, cid:)"
    ),
    ice: bool = typer.Option(False, "--ice", help="ICE (RFC 8445) candidates; media on its pair"),
    stun: str | None = typer.Option(None, help="STUN server HOST:PORT (srflx candidates)"),
    turn: str | None = typer.Option(None, help="TURN server USER:PASS@HOST:PORT (relay)"),
    relay_only: bool = typer.Option(False, "--relay-only", help="offer relay candidates only"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Place one call; exit 0 when answered and hung up, 1 when rejected or timed out."""
    ice_opts = ice_flags(ice, stun, turn, relay_only)
    if ice_opts is not None and (srtp != "none" or capture is not None):
        raise _fail("--ice carries plain RTP for now: use it with --srtp none, without --capture")
    if transport not in _TRANSPORTS:
        raise _fail(f"--transport must be one of {', '.join(_TRANSPORTS)}, not {transport!r}")
    if srtp not in _SRTP:
        raise _fail(f"--srtp must be one of {', '.join(_SRTP)}, not {srtp!r}")
    if (region is None) != (not emergency_edge) or (location and region is None):
        raise _fail("--region, --emergency-edge (and --location) go together")
    from callward.ua.emergency import emergency_number

    if region is not None and emergency_number(target, region) is not None:
        pass  # 112, tel:911, urn:service:sos ...: goes to the emergency route
    elif not target.startswith(("sip:", "sips:")):
        raise _fail(f"target must be a sip: or sips: URI, not {target!r}")
    if not 0 <= seconds <= 3600 or not 0 < timeout <= 600 or not 0 <= linger <= 60:
        raise _fail("--seconds must be 0..3600, --timeout 0..600 and --linger 0..60")
    proxy_name = proxy if proxy and is_name(proxy) else None
    outbound = _nonzero(hostport(proxy, "--proxy"), "--proxy") if proxy and not proxy_name else None
    resolver = (
        _nonzero(hostport(dns_server, "--dns-server"), "--dns-server") if dns_server else None
    )
    flags = media_flags(codec, bitrate, ptime, dtx, fec, audio, seed, noise_suppression,
                        (loss, rtt, min_mos) if optimise else None, metered,
                        send_loss)  # fmt: skip
    if capture is not None and not capture.parent.is_dir():
        raise _fail(f"--capture {capture}: directory does not exist")
    try:
        oauth = oauth_options(oauth_issuer, client_id, oauth_user, user, password,
                              totp_secret_file, keystore)  # fmt: skip
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    if oauth is not None and not register:
        raise _fail("--oauth-issuer needs --register (the token goes on REGISTER and INVITE)")
    try:
        result = asyncio.run(
            _call(
                target,
                user,
                password,
                outbound,
                transport,
                seconds,
                register,
                timeout,
                linger,
                srtp,
                oauth,
                domain,
                flags,
                capture,
                proxy_name,
                resolver,
                keystore,
                ice_opts,
                (region, emergency_edge, location) if region else None,
            )
        )
    except TimeoutError:
        raise _fail(f"no answer within {timeout:g} s") from None
    except AuthError as exc:  # the IdP refused us: a finding, not bad input
        raise _fail(str(exc).splitlines()[0], code=1) from None
    except (CallwardError, OSError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        rtp = result.get("rtp", {})
        typer.echo(
            f"status {result.get('status')}, setup {result.get('setup_ms')} ms, "
            f"RTP sent {rtp.get('packets_sent')} / received {rtp.get('packets_received')}"
        )
    if result.get("status") != 200:
        raise typer.Exit(1)


@phone_app.command("answer")
def answer_cmd(
    listen: str = typer.Option("127.0.0.1:5080", help="HOST:PORT to listen on"),
    user: str = typer.Option("callward", help="our user name"),
    transport: str = typer.Option("udp", help="udp, tcp, tls, ws or wss"),
    calls: int = typer.Option(1, help="answer this many calls, then exit"),
    timeout: float = typer.Option(60.0, help="give up waiting after this many seconds"),
    register: bool = typer.Option(
        False, "--register", help="register with --proxy first (refreshed; unregistered at exit)"
    ),
    proxy: list[str] = typer.Option(
        [], help="registrar/edge HOST:PORT; give two for RFC 5626 outbound with failover"
    ),
    password: str | None = typer.Option(
        None, envvar="CALLWARD_PHONE_PASSWORD", help="digest password"
    ),
    domain: str | None = typer.Option(None, help="AOR domain (default: the first --proxy)"),
    expires: int = typer.Option(600, help="registration expiry asked for, seconds"),
    idle_budget: float | None = typer.Option(
        None, help="idle bytes/hour for keep-alives + refresh (usage/budget.py sets both)"
    ),
    srtp: str = typer.Option(
        "none", help="media security: none (accepts any), sdes or dtls (refuses plain RTP)"
    ),
    oauth_issuer: str | None = ISSUER_OPT,
    client_id: str = CLIENT_OPT,
    oauth_user: str | None = OAUTH_USER_OPT,
    totp_secret_file: Path | None = TOTP_OPT,
    keystore: Path | None = KEYSTORE_OPT,
    codec: str = typer.Option("pcmu", help="voice codec to offer first: opus, pcmu or pcma"),
    bitrate: int = typer.Option(16000, help="Opus bit rate, bit/s (6000..64000)"),
    ptime: int = typer.Option(20, help="packet time we ask for, ms: 20, 40 or 60 (10: opus)"),
    dtx: bool = typer.Option(
        False, "--dtx", "--vad", help="Opus DTX, or G.711 VAD + RFC 3389 comfort noise"
    ),
    fec: bool = typer.Option(True, "--fec/--no-fec", help="Opus in-band FEC (RFC 7587)"),
    audio: str = typer.Option(
        "conversation", help="what to say: conversation (talk-spurt model), silence or a WAV"
    ),
    seed: int = typer.Option(1, help="seed of the synthetic conversation"),
    noise_suppression: bool = typer.Option(
        False, "--ns", help="speexdsp noise suppression before VAD/DTX"
    ),
    ice_lite: bool = typer.Option(
        False, "--ice-lite", help="answer ICE checks on the RTP port (WebRTC callers need it)"
    ),
    ice: bool = typer.Option(False, "--ice", help="full ICE (RFC 8445); 2 s of RTP on its pair"),
    stun: str | None = typer.Option(None, help="STUN server HOST:PORT (srflx candidates)"),
    turn: str | None = typer.Option(None, help="TURN server USER:PASS@HOST:PORT (relay)"),
    relay_only: bool = typer.Option(False, "--relay-only", help="offer relay candidates only"),
    optimise: bool = OPTIMISE_OPT,
    loss: float = LOSS_OPT,
    rtt: float = RTT_OPT,
    min_mos: float = MIN_MOS_OPT,
    metered: bool = METERED_OPT,
    send_loss: float = SEND_LOSS_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Auto-answer calls until ``--calls`` have ended; exit 1 if none came within the timeout."""
    ice_opts = ice_flags(ice, stun, turn, relay_only)
    if ice_opts is not None and (srtp != "none" or ice_lite):
        raise _fail("--ice carries plain RTP for now: use it with --srtp none, without --ice-lite")
    if transport not in _TRANSPORTS:
        raise _fail(f"--transport must be one of {', '.join(_TRANSPORTS)}, not {transport!r}")
    if srtp not in _SRTP:
        raise _fail(f"--srtp must be one of {', '.join(_SRTP)}, not {srtp!r}")
    if not 1 <= calls <= 10_000 or not 0 < timeout <= 3600:
        raise _fail("--calls must be 1..10000 and --timeout 0..3600")
    if register and not 1 <= len(proxy) <= 2:
        raise _fail("--register needs one or two --proxy HOST:PORT")
    if not 60 <= expires <= 86_400:
        raise _fail(f"--expires must be 60..86400, not {expires}")
    where = _nonzero(hostport(listen, "--listen"), "--listen")
    edges = [_nonzero(hostport(p, "--proxy"), "--proxy") for p in proxy] if register else None
    flags = media_flags(codec, bitrate, ptime, dtx, fec, audio, seed, noise_suppression,
                        (loss, rtt, min_mos) if optimise else None, metered,
                        send_loss)  # fmt: skip
    try:
        oauth = oauth_options(oauth_issuer, client_id, oauth_user, user, password,
                              totp_secret_file, keystore)  # fmt: skip
        budget = _budget(idle_budget, transport, register)
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    if oauth is not None and not register:
        raise _fail("--oauth-issuer needs --register (the token goes on REGISTER and INVITE)")
    try:
        result = asyncio.run(
            _answer(
                where,
                user,
                transport,
                calls,
                timeout,
                password=password,
                edges=edges,
                domain=domain,
                expires=expires,
                srtp=srtp,
                oauth=oauth,
                flags=flags,
                ice_lite=ice_lite,
                ice=ice_opts,
                budget=budget,
            )
        )
    except TimeoutError:
        typer.echo(f"callward: no call within {timeout:g} s", err=True)
        raise typer.Exit(1) from None
    except AuthError as exc:
        raise _fail(str(exc).splitlines()[0], code=1) from None
    except (CallwardError, OSError) as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    typer.echo(
        json.dumps(result, indent=2) if as_json else f"answered {len(result['answered'])} call(s)"
    )


register_login(phone_app)
register_contacts(phone_app)


def register(app: typer.Typer) -> None:
    app.add_typer(phone_app, name="phone")
