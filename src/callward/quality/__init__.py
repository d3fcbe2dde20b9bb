"""callward.quality: capture ingest (pcap/pcapng/HEPv3), tshark-exact RTP stream statistics,
G.107 E-model MOS with playout-model effective loss, SIP↔RTP correlation and root cause,
per-tenant MOS alerts and the DPI sampling policy."""

from callward.quality.emodel import CODECS, EModelInput, EModelResult, compute, mos_from_r, quick
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
