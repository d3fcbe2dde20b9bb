"""callward.quality: capture ingest (pcap/pcapng/HEPv3), tshark-exact RTP stream statistics,
G.107 E-model MOS with playout-model effective loss, SIP↔RTP correlation and root cause,
per-tenant MOS alerts and the DPI sampling policy.

The names below load on first use (PEP 562), so ``callward mos`` importing
``callward.quality.emodel`` does not pay for numpy and the capture pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callward.lazy import exports

if TYPE_CHECKING:
    from callward.quality.emodel import (
        CODECS,
        EModelInput,
        EModelResult,
        compute,
        mos_from_r,
        quick,
    )
    from callward.quality.report import AnalysisReport, analyze_capture, redacted_summary

__all__ = [
    "CODECS",
    "AnalysisReport",
    "EModelInput",
    "EModelResult",
    "analyze_capture",
    "compute",
    "mos_from_r",
    "quick",
    "redacted_summary",
]

# Names load on first use (PEP 562) from the module the TYPE_CHECKING block names: add an
# export by importing it there and listing it in __all__.
__getattr__ = exports(__name__)
