"""Type stub for the optional C accelerator (src/callward/sip/_speedups.c)."""

from callward.sip.message import Request, Response

API_VERSION: int

def parse(data: bytes, limits: object, /) -> Request | Response | None: ...
def setup(
    request: type,
    response: type,
    headers: type,
    sip_uri: type,
    name_addr: type,
    via: type,
    cseq: type,
    canonical: dict[str, str],
    limits_type: type,
    /,
) -> None: ...
