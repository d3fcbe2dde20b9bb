"""One error tree for the whole project.

::

    CallwardError
    ├── ProtocolError                 status_hint: the SIP status an edge should answer with
    │   ├── LocalProtocolError        we were asked to do something the protocol forbids
    │   └── RemoteProtocolError       the peer sent something the protocol forbids
    │       └── SipParseError         malformed SIP bytes (line + rule named)
    │       └── SdpError              malformed / unacceptable SDP (488 by default)
    │       └── MediaError            malformed RTP/RTCP/SRTP, codec failures
    │       └── NgError               malformed or refused rtpengine ng control messages
    │       └── X2X3Error             malformed ETSI TS 103 221-2 X2/X3 PDUs (LI delivery)
    ├── TransportError                sockets, TLS, WebSocket framing
    ├── AuthError                     digest / OAuth2 failures
    ├── DnsError                      RFC 3263 resolution failures
    ├── ConfigError                   invalid configuration (one line naming the field)
    ├── StoreError                    persistence failures (SQLite, PostgreSQL, Redis, Parquet)
    ├── PolicyError                   a privacy / retention / consent rule forbids the action
    └── CaptureError                  unreadable or unsupported capture files

Third-party exceptions are translated at the boundary (like httpx's ``map_httpcore_exceptions``)
so callers only ever catch these.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CallwardError",
    "CaptureError",
    "ConfigError",
    "DnsError",
    "LocalProtocolError",
    "MediaError",
    "NgError",
    "PolicyError",
    "ProtocolError",
    "RemoteProtocolError",
    "SdpError",
    "SipParseError",
    "StoreError",
    "TransportError",
    "X2X3Error",
]


class CallwardError(Exception):
    """Root of every error callward raises on purpose."""


class ProtocolError(CallwardError):
    """A protocol rule was broken; ``status_hint`` is the SIP status to answer with."""

    status_hint: int = 400

    def __init__(self, message: str, *, status_hint: int | None = None) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol forbids (a bug in our caller)."""

    status_hint = 500


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class SipParseError(RemoteProtocolError):
    """Malformed SIP message. ``line`` is 1-based (0 when not tied to a line); ``rule`` names
    the grammar rule (RFC 3261 §25) that failed, so an edge can put it in a 400 reason phrase."""

    def __init__(
        self, message: str, *, line: int = 0, rule: str = "", status_hint: int = 400
    ) -> None:
        self.line = line
        self.rule = rule
        where = f"line {line}: " if line else ""
        why = f" ({rule})" if rule else ""
        super().__init__(f"{where}{message}{why}", status_hint=status_hint)

    @property
    def reason_phrase(self) -> str:
        """A short, single-line, ASCII-safe reason phrase for a 400 response."""
        text = str(self).replace("\r", " ").replace("\n", " ")
        text = text.encode("ascii", "replace").decode("ascii")
        return "Bad Request - " + text[:120]


class SdpError(RemoteProtocolError):
    """Malformed or unacceptable SDP; 488 Not Acceptable Here by default.

    ``line`` (1-based, 0 when not tied to a line) and ``rule`` name what failed;
    ``warn_code`` is the RFC 3261 §20.43 warn-code for a Warning header (305 "Incompatible
    media format", 302 "Incompatible transport protocol", 399 miscellaneous, ...)."""

    status_hint = 488

    def __init__(
        self,
        message: str,
        *,
        line: int = 0,
        rule: str = "",
        warn_code: int = 399,
        status_hint: int | None = None,
    ) -> None:
        self.line = line
        self.rule = rule
        self.warn_code = warn_code
        self.detail = message
        where = f"line {line}: " if line else ""
        why = f" ({rule})" if rule else ""
        super().__init__(f"{where}{message}{why}", status_hint=status_hint)

    def warning(self, agent: str = "callward") -> str:
        """A Warning header value: ``warn-code SP warn-agent SP quoted-string`` (§20.43)."""
        text = self.detail.encode("ascii", "replace").decode("ascii")
        text = "".join(c if " " <= c <= "~" else " " for c in text)[:120]
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.warn_code} {agent} "{text}"'


class MediaError(RemoteProtocolError):
    """Malformed RTP/RTCP/SRTP packets, authentication failures, codec errors."""


class NgError(RemoteProtocolError):
    """A bad rtpengine ng control message (bencode, cookie framing, command, flags), or an ng
    command the relay refused; the message is what goes into the reply's ``error-reason``."""


class X2X3Error(RemoteProtocolError):
    """A malformed or rule-breaking ETSI TS 103 221-2 X2/X3 PDU (field and rule named)."""


class TransportError(CallwardError):
    """A socket, TLS or WebSocket failure."""


class AuthError(CallwardError):
    """Digest or token authentication failed."""


class DnsError(CallwardError):
    """RFC 3263 server location failed."""


class ConfigError(CallwardError):
    """Invalid configuration: the message names the field and what was expected."""


class StoreError(CallwardError):
    """A store (SQLite, PostgreSQL, Redis, Parquet) failed."""


class PolicyError(CallwardError):
    """A privacy, retention, consent or security policy forbids the action."""


class CaptureError(CallwardError):
    """A capture file is unreadable or in an unsupported format."""
