"""OAuth 2.0 for ``callward phone`` (RFC 8898 Bearer on REGISTER and INVITE): the flags of
``phone call`` / ``phone answer`` and the ``phone login`` command.

* ``callward phone login --oauth-issuer URL --client-id ID --keystore DIR`` signs in through a
  browser: authorization code + PKCE with a loopback redirect (RFC 8252, RFC 7636); the IdP
  asks for the password and the TOTP code. The tokens go into the encrypted keystore
  (AES-GCM, ``ua/keystore.py``), never in the clear.
* ``callward phone call|answer --register --oauth-issuer URL --client-id ID`` take the tokens
  from ``--keystore`` (refreshing them: single flight, ahead of expiry, backoff across IdP
  outages) or log in headless with ``--oauth-user`` + password (``CALLWARD_PHONE_PASSWORD``)
  + ``--totp-secret-file`` (the TOTP seed an authenticator app holds). When refresh fails
  for good the phone logs in again *with the second factor*, or stops with one line: it never
  falls back to the password alone or to digest.

The keystore key is ``CALLWARD_KEYSTORE_PASSPHRASE`` through scrypt, else the OS keyring.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from callward.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from callward.ua.keystore import Keystore
    from callward.ua.tokens import TokenSource

__all__ = ["OAuthOptions", "oauth_options", "open_token_source", "register_login"]

PASSPHRASE_ENV = "CALLWARD_KEYSTORE_PASSPHRASE"

ISSUER_OPT: Any = typer.Option(
    None, "--oauth-issuer", help="OAuth 2.0 / OIDC issuer URL: present Bearer tokens (RFC 8898)"
)
CLIENT_OPT: Any = typer.Option("callward-phone", "--client-id", help="OAuth client_id")
OAUTH_USER_OPT: Any = typer.Option(
    None, "--oauth-user", help="IdP user name for a headless login (default: --user)"
)
TOTP_OPT: Any = typer.Option(
    None, "--totp-secret-file", help="TOTP seed (base32, mode 0600) for the second factor"
)
KEYSTORE_OPT: Any = typer.Option(
    None, "--keystore", help="encrypted token store directory (key: passphrase env or keyring)"
)


@dataclass(frozen=True, slots=True)
class OAuthOptions:
    issuer: str
    client_id: str
    username: str
    password: str | None  # the IdP password (headless login only); never logged
    totp_secret: str | None  # never logged
    keystore: Path | None
    scope: str = "sip"

    def __repr__(self) -> str:
        return f"OAuthOptions(issuer={self.issuer!r}, client_id={self.client_id!r})"


def _read_totp_secret(path: Path) -> str:
    try:
        st = path.stat()
        raw = path.read_text().strip().replace(" ", "")
    except OSError as exc:
        raise ConfigError(f"--totp-secret-file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"--totp-secret-file {path}: readable by others; chmod 600 it")
    import base64
    import binascii

    try:
        base64.b32decode(raw.upper() + "=" * (-len(raw) % 8))
    except (binascii.Error, ValueError):
        raise ConfigError(f"--totp-secret-file {path}: expected a base32 TOTP seed") from None
    if not 16 <= len(raw) <= 128:
        raise ConfigError(f"--totp-secret-file {path}: expected 16..128 base32 characters")
    return raw.upper()


def oauth_options(
    issuer: str | None,
    client_id: str,
    oauth_user: str | None,
    user: str,
    password: str | None,
    totp_file: Path | None,
    keystore: Path | None,
) -> OAuthOptions | None:
    """The validated flags, or None without ``--oauth-issuer`` (ConfigError: one line)."""
    if issuer is None:
        if totp_file is not None or oauth_user is not None:
            raise ConfigError("--totp-secret-file and --oauth-user need --oauth-issuer")
        return None
    if not client_id or len(client_id) > 200:
        raise ConfigError("--client-id: expected 1..200 characters")
    if totp_file is not None and not password:
        raise ConfigError("--totp-secret-file needs the IdP password (CALLWARD_PHONE_PASSWORD)")
    if keystore is None and totp_file is None:
        raise ConfigError("--oauth-issuer needs --keystore (after `callward phone login`) or "
                          "--totp-secret-file for a headless login")  # fmt: skip
    secret = _read_totp_secret(totp_file) if totp_file is not None else None
    return OAuthOptions(issuer, client_id, oauth_user or user, password, secret, keystore)


def open_keystore(directory: Path) -> Keystore:
    from callward.ua.keystore import Keystore

    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        return Keystore.with_passphrase(directory, passphrase)
    return Keystore.with_keyring(directory)


async def _print_url(url: str) -> None:
    typer.echo(f"callward: open this URL in a browser to sign in: {url}", err=True)
    sys.stderr.flush()


async def open_token_source(
    opts: OAuthOptions, *, browser: bool = False, login_timeout: float = 300.0
) -> TokenSource:
    """A token source for the phone: discovery, then the stored tokens (if any); the
    re-authentication is the headless password + TOTP login when a seed is given, else the
    browser flow when ``browser`` (``phone login``), else none (refresh failing for good then
    ends the command with one line)."""
    import pyotp

    from callward.ua.oauth_login import AuthCodeLogin, discover
    from callward.ua.tokens import Login, OAuthClient, Reauthenticator, TokenSource

    meta = await discover(opts.issuer)
    login: Reauthenticator | None = None
    if opts.totp_secret is not None and opts.password:
        totp = pyotp.TOTP(opts.totp_secret)

        async def code() -> str:
            return totp.now()

        login = Login(opts.username, opts.password, code)
    elif browser:
        if meta.authorization_endpoint is None:
            raise ConfigError("the issuer has no authorization_endpoint (browser sign-in)")
        login = AuthCodeLogin(meta.authorization_endpoint, _print_url, opts.scope, login_timeout)
    keystore = open_keystore(opts.keystore) if opts.keystore is not None else None
    client = OAuthClient(meta.token_endpoint, opts.client_id, opts.scope,
                         revocation_endpoint=meta.revocation_endpoint)  # fmt: skip
    return TokenSource(client, login=login, keystore=keystore)


def register_login(phone_app: typer.Typer) -> None:
    """``callward phone login``."""

    @phone_app.command("login")
    def login_cmd(
        oauth_issuer: str = typer.Option(..., "--oauth-issuer", help="OAuth 2.0 / OIDC issuer"),
        client_id: str = CLIENT_OPT,
        keystore: Path = typer.Option(..., "--keystore", help="encrypted token store directory"),
        scope: str = typer.Option("sip", help="scopes to ask for"),
        timeout: float = typer.Option(300.0, help="seconds to wait for the browser sign-in"),
    ) -> None:
        """Sign in through a browser (authorization code + PKCE, loopback redirect) and keep
        the tokens encrypted in --keystore for `phone call|answer --oauth-issuer`."""
        import asyncio
        import json

        from callward.cli.exits import fail
        from callward.errors import CallwardError

        if not 1 <= timeout <= 3600:
            raise fail("--timeout must be 1..3600")

        async def run() -> dict[str, Any]:
            opts = OAuthOptions(oauth_issuer, client_id, "", None, None, keystore, scope)
            source = await open_token_source(opts, browser=True, login_timeout=timeout)
            try:
                await source.login()
                grant = source.core.grant
                assert grant is not None
                return {"signed_in": True, "scope": grant.scope, "expires_in": grant.expires_in}
            finally:
                await source.aclose()

        try:
            result = asyncio.run(run())
        except AuthError as exc:
            raise fail(str(exc).splitlines()[0], code=1) from None
        except (CallwardError, OSError) as exc:
            raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        typer.echo(json.dumps(result))
