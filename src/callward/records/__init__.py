"""callward.records: CDRs at carrier scale.

Public API (see docs/architecture.md, "records")::

    from callward.records import open_records, CdrSink, CdrQuery
    records = open_records("var")                 # SQLite hot store, keys, audit, holds
    sink = CdrSink(records.store); bus.subscribe(sink.handle)   # InProcessBus -> CDRs
    records.tiered.query(CdrQuery(subject="+4915112345678"))    # hot + cold, same API

Scale-out pieces live in their own modules so that importing this package stays light:
``records.store_postgres`` (psycopg), ``records.bus`` (nats-py), ``records.cold`` (pyarrow,
DuckDB), ``records.retention``, ``records.audit``, ``records.export``.
"""

from callward.records.assembly import CallAssembler, Reconciler
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.schema import Cdr, CdrV1, CdrV2, DataClass, Leg, Lineage, read_cdr
from callward.records.service import CdrSink, Records, open_records
from callward.records.store_sqlite import SqliteCdrStore

__all__ = [
    "CallAssembler",
    "Cdr",
    "CdrQuery",
    "CdrSink",
    "CdrV1",
    "CdrV2",
    "DataClass",
    "Leg",
    "Lineage",
    "Reconciler",
    "RecordCodec",
    "Records",
    "SqliteCdrStore",
    "open_records",
    "read_cdr",
]
