"""``POST /api/v1/quality/analyze``: a capture file in, per-stream quality over time out.

The body is the raw file (``application/octet-stream``, no multipart: a browser's
``fetch(url, {body: file})`` sends exactly that). Analysis is CPU work, so it runs on a worker
thread, not on the event loop and not on the records thread that serializes CDR reads.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from callward.web.captures import MAX_CAPTURE_BYTES, analyze_upload
from callward.web.routes.api import _ERR, Who, _known_query_only, state_of
from callward.web.schemas import CaptureAnalysis

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(_known_query_only)])


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CAPTURE_BYTES:
        raise HTTPException(413, f"capture larger than {MAX_CAPTURE_BYTES >> 20} MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CAPTURE_BYTES:
            raise HTTPException(413, f"capture larger than {MAX_CAPTURE_BYTES >> 20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/api/v1/quality/analyze",
    response_model=CaptureAnalysis,
    responses={400: _ERR, 401: _ERR, 413: _ERR, 422: _ERR},
    tags=["quality"],
    summary="Analyse a pcap/pcapng/HEPv3 capture: MOS, jitter and loss per stream over time",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def post_analyze(
    request: Request,
    who: Who,
    window_s: Annotated[float, Query(ge=0.1, le=60.0, allow_inf_nan=False)] = 1.0,
    plot: bool = False,
) -> dict[str, Any]:
    data = await _read_capped(request)
    if not data:
        raise HTTPException(422, "body: expected a pcap, pcapng or HEPv3 capture file")
    cfg = state_of(request).config.quality
    return await asyncio.to_thread(analyze_upload, data, cfg, window_s, plot)
