"""``callward phone contacts``: private contact discovery (OPRF, ``ua/psi.py``) and presence of
the matches against ``callward web``, with the phone's OAuth token (same flags as ``phone
call``). The address book is a local JSON file ``{"contact id": "+E.164", ...}``; it never
leaves the phone: only blinded points do. What the phone learns (the sealed table, the OPRF
values of its contacts, the matches) is kept sealed in ``--keystore``, so the next run
revalidates the table (a 304 when nothing changed) and evaluates only new contacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from callward.cli.phone_oauth import CLIENT_OPT, OAUTH_USER_OPT, TOTP_OPT

__all__ = ["register_contacts"]

RECORD = "psi-state"
MAX_BOOK = 10_000


def _read_book(path: Path) -> dict[str, str]:
    from callward.errors import ConfigError
    from callward.sip.e164 import to_e164

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--book {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or len(data) > MAX_BOOK:
        raise ConfigError(f"--book {path}: expected an object of at most {MAX_BOOK} contacts")
    book: dict[str, str] = {}
    for cid, number in data.items():
        e164 = to_e164(str(number)) if isinstance(number, str) else None
        if e164 is not None:  # numbers that are not E.164 are not looked up
            book[str(cid)[:100]] = e164
    return book


def register_contacts(phone_app: typer.Typer) -> None:
    @phone_app.command("contacts")
    def contacts_cmd(
        web: str = typer.Option(..., "--web", help="callward web base URL"),
        book: Path = typer.Option(..., "--book", help='JSON {"contact id": "+E.164"}'),
        oauth_issuer: str = typer.Option(..., "--oauth-issuer", help="OAuth 2.0 / OIDC issuer"),
        keystore: Path = typer.Option(..., "--keystore", help="encrypted device store"),
        client_id: str = CLIENT_OPT,
        oauth_user: str | None = OAUTH_USER_OPT,
        totp_secret_file: Path | None = TOTP_OPT,
        password: str | None = typer.Option(
            None, envvar="CALLWARD_PHONE_PASSWORD", help="IdP password (headless login)"
        ),
        presence: bool = typer.Option(False, "--presence", help="watch the matches' presence"),
    ) -> None:
        """Find which contacts are subscribers without sending the book (OPRF), and print
        their AORs (and presence) as JSON."""
        import asyncio

        from callward.cli.exits import fail
        from callward.cli.phone_oauth import oauth_options, open_token_source
        from callward.errors import AuthError, CallwardError

        if not web.startswith(("http://", "https://")):
            raise fail(f"--web {web[:60]!r}: expected an http(s) URL")
        if totp_secret_file is not None and not oauth_user:
            raise fail("--totp-secret-file needs --oauth-user (the IdP user name)")

        async def run() -> dict[str, Any]:
            import time

            from callward.ua.cache import CoherentCache
            from callward.ua.presence import PresenceClient
            from callward.ua.psi_client import PsiDiscovery

            opts = oauth_options(oauth_issuer, client_id, oauth_user, oauth_user or "",
                                 password, totp_secret_file, keystore)  # fmt: skip
            assert opts is not None
            contacts = _read_book(book)
            tokens = await open_token_source(opts)
            store = tokens._keystore
            assert store is not None
            cache = CoherentCache()
            kept = store.get_json(RECORD) or {}
            cache.restore(kept.get("cache"))
            psi = PsiDiscovery(web, tokens, cache, clock=time.time)
            psi.key_id = str(kept.get("key_id", ""))
            psi.values = {c: (n, bytes.fromhex(f)) for c, (n, f) in kept.get("values", {}).items()}
            try:
                matches = await psi.discover(contacts)
                out: dict[str, Any] = {
                    "matches": matches,
                    "evaluated": psi.evaluated,
                    "bytes_in": psi.bytes_in,
                    "bytes_out": psi.bytes_out,
                }
                if presence and matches:
                    pc = PresenceClient(web, tokens, cache, clock=time.time)
                    await pc.watch(sorted(set(matches.values())))
                    await pc.refresh()
                    view, _ = pc.view()
                    out["presence"] = {aor: st["status"] for aor, st in view.items()}
                return out
            finally:
                store.put_json(RECORD, {"cache": cache.snapshot(), "key_id": psi.key_id,
                                        "values": {c: [n, f.hex()] for c, (n, f)
                                                   in psi.values.items()}})  # fmt: skip
                await tokens.aclose()

        try:
            result = asyncio.run(run())
        except AuthError as exc:
            raise fail(str(exc).splitlines()[0], code=1) from None
        except (CallwardError, OSError) as exc:
            raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        typer.echo(json.dumps(result, indent=2))
