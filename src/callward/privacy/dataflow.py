"""The data-flow map of a deployment: components, regions, processors, the data classes each
stores or sends, and every cross-border transfer checked against a safeguard.

The deployment is described in a YAML file (``callward privacy dataflow --deployment F``; an
example with three regions is ``docs/examples/deployment-3-regions.yaml``)::

    controller: {name: Example Telco, country: DE}
    components:
      - {name: edge-fra, kind: edge, region: eu-fra, stores: [location, log],
         sends: [{to: relay-us, data: [cdr]}]}
    regions: {eu-fra: {country: DE}, us-east: {country: US}}
    processors:
      - {name: MediaCo, country: US, dpa: {signed: 2025-01-10, expires: 2027-01-10,
         scope: [recording], regions: [us-east]}, sccs: true}

A transfer is a ``sends`` edge, or data stored by a component in another country than the
controller. Transfers out of the EEA need a safeguard (GDPR Chapter V): an adequacy decision for
the destination country (Art. 45), standard contractual clauses with the processor (Art. 46(2)(c)),
or another recorded one. The graph is written as JSON (stable, for diffs and snapshot tests) and
SVG (no external renderer needed); PNG when matplotlib is installed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from callward.errors import ConfigError
from callward.privacy.retention_policy import DATA_CLASSES, read_yaml

__all__ = [
    "ADEQUACY",
    "EEA",
    "Component",
    "Deployment",
    "Processor",
    "Transfer",
    "dataflow_graph",
    "load_deployment",
    "render_svg",
    "transfers",
]

EEA = frozenset(
    ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
     "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO")
)  # fmt: skip
#: Countries with an EU adequacy decision (GDPR Art. 45), as published by the Commission;
#: US adequacy covers only organisations certified under the EU-US Data Privacy Framework and is
#: therefore not listed as a country-wide decision here.
ADEQUACY = frozenset(
    ("AD", "AR", "CA", "FO", "GG", "IL", "IM", "JP", "JE", "NZ", "KR", "CH", "GB", "UY")
)  # fmt: skip
_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Processor:
    name: str
    country: str
    dpa_signed: str | None = None
    dpa_expires: str | None = None
    dpa_scope: tuple[str, ...] = ()
    dpa_regions: tuple[str, ...] = ()
    sccs: bool = False


@dataclass(frozen=True)
class Component:
    name: str
    kind: str
    region: str
    operator: str  # "controller" or a processor name
    stores: tuple[str, ...] = ()
    sends: tuple[tuple[str, tuple[str, ...]], ...] = ()
    consent_gated: bool = False


@dataclass(frozen=True)
class Deployment:
    controller: str
    controller_country: str
    regions: dict[str, str]  # region -> country
    components: tuple[Component, ...]
    processors: dict[str, Processor]
    dpias: tuple[dict[str, Any], ...] = ()
    source: str = ""

    def country(self, region: str) -> str:
        return self.regions[region]


@dataclass(frozen=True)
class Transfer:
    source: str  # component (or the controller)
    target: str
    from_country: str
    to_country: str
    data: tuple[str, ...]
    processor: str
    safeguard: str  # "" when none applies
    needs_safeguard: bool


def _list(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: expected a list of names")
    return tuple(v)


def _classes(v: Any, where: str) -> tuple[str, ...]:
    out = _list(v, where)
    for dc in out:
        if dc not in DATA_CLASSES:
            raise ConfigError(f"{where}: unknown data class {dc!r}")
    return out


def load_deployment(path: Path) -> Deployment:
    """Parse and cross-check a deployment file; ConfigError (one line) on any inconsistency."""
    data = read_yaml(path, "deployment", _MAX_BYTES)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    try:
        ctl = data["controller"]
        regions = {
            str(k): str(v["country"]).upper() for k, v in (data.get("regions") or {}).items()
        }
        procs: dict[str, Processor] = {}
        for p in data.get("processors") or []:
            dpa = p.get("dpa") or {}
            procs[p["name"]] = Processor(
                p["name"], str(p["country"]).upper(),
                str(dpa["signed"]) if dpa.get("signed") else None,
                str(dpa["expires"]) if dpa.get("expires") else None,
                _classes(dpa.get("scope"), f"processor {p['name']} dpa.scope"),
                _list(dpa.get("regions"), f"processor {p['name']} dpa.regions"),
                bool(p.get("sccs", False)),
            )  # fmt: skip
        comps = []
        for c in data.get("components") or []:
            where = f"component {c.get('name')!r}"
            if c["region"] not in regions:
                raise ConfigError(f"{where}: unknown region {c['region']!r}")
            op = c.get("operator", "controller")
            if op != "controller" and op not in procs:
                raise ConfigError(f"{where}: operator {op!r} is not a listed processor")
            sends = tuple(
                (s["to"], _classes(s.get("data"), f"{where} sends")) for s in c.get("sends") or []
            )
            comps.append(Component(c["name"], str(c.get("kind", "service")), c["region"], op,
                                   _classes(c.get("stores"), f"{where} stores"), sends,
                                   bool(c.get("consent_gated", False))))  # fmt: skip
        names = {c.name for c in comps}
        for c in comps:
            for to, _ in c.sends:
                if to not in names:
                    raise ConfigError(f"component {c.name!r}: sends to unknown component {to!r}")
        return Deployment(str(ctl["name"]), str(ctl["country"]).upper(), regions, tuple(comps),
                          procs, tuple(data.get("dpias") or ()), str(path))  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: deployment field missing or malformed: {exc}") from None


def _safeguard(dep: Deployment, frm: str, to: str, processor: str, data: tuple[str, ...]) -> str:
    if to in ADEQUACY:
        return f"adequacy decision ({to})"
    p = dep.processors.get(processor)
    if p is not None and p.sccs:
        return f"standard contractual clauses ({p.name})"
    return ""


def transfers(dep: Deployment) -> list[Transfer]:
    """Every flow of personal data between countries, with the safeguard found (if any)."""
    by_name = {c.name: c for c in dep.components}
    out: list[Transfer] = []

    def add(src: str, frm: str, tgt: Component, data: tuple[str, ...]) -> None:
        to = dep.country(tgt.region)
        if to == frm or not data:
            return
        needs = frm in EEA and to not in EEA
        sg = _safeguard(dep, frm, to, tgt.operator, data) if needs else "none needed"
        out.append(Transfer(src, tgt.name, frm, to, data, tgt.operator, sg, needs))

    for c in dep.components:
        if c.stores:
            add("controller", dep.controller_country, c, c.stores)
        for to, data in c.sends:
            add(c.name, dep.country(c.region), by_name[to], data)
    return out


def dataflow_graph(dep: Deployment) -> dict[str, Any]:
    """Nodes, edges and transfers as plain data (sorted: stable JSON for snapshot tests)."""
    nodes = [
        {"id": c.name, "kind": c.kind, "region": c.region, "country": dep.country(c.region),
         "operator": c.operator, "stores": sorted(c.stores)}
        for c in sorted(dep.components, key=lambda c: c.name)
    ]  # fmt: skip
    edges = sorted(
        ({"from": c.name, "to": to, "data": sorted(data)} for c in dep.components
         for to, data in c.sends),
        key=lambda e: (e["from"], e["to"]),
    )  # fmt: skip
    ts = [asdict(t) for t in transfers(dep)]
    for t in ts:
        t["data"] = sorted(t["data"])
    return {
        "controller": {"name": dep.controller, "country": dep.controller_country},
        "regions": dict(sorted(dep.regions.items())),
        "processors": sorted(dep.processors),
        "nodes": nodes,
        "edges": edges,
        "transfers": sorted(ts, key=lambda t: (t["source"], t["target"])),
        "unsafeguarded": sorted(
            f"{t['source']} -> {t['target']} ({t['from_country']} -> {t['to_country']})"
            for t in ts if t["needs_safeguard"] and not t["safeguard"]
        ),
    }  # fmt: skip


def render_svg(graph: dict[str, Any]) -> str:
    """A plain SVG: one column per region, components as boxes, flows as arrows (red when a
    transfer lacks a safeguard)."""
    regions = list(graph["regions"])
    col = {r: i for i, r in enumerate(regions)}
    rows: dict[str, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for n in graph["nodes"]:
        r = n["region"]
        rows[r] = rows.get(r, 0) + 1
        pos[n["id"]] = (40 + col[r] * 260, 60 + rows[r] * 110)
    width = 60 + 260 * max(1, len(regions))
    height = 120 + 110 * max(rows.values() or [1])
    bad = {(t["source"], t["target"]) for t in graph["transfers"]
           if t["needs_safeguard"] and not t["safeguard"]}  # fmt: skip
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>']  # fmt: skip
    for r, i in col.items():
        parts.append(f'<text x="{40 + i * 260}" y="30" font-weight="bold">{e(r)} '
                     f"({e(graph['regions'][r])})</text>")  # fmt: skip
    for edge in graph["edges"]:
        (x1, y1), (x2, y2) = pos[edge["from"]], pos[edge["to"]]
        colour = "red" if (edge["from"], edge["to"]) in bad else "black"
        parts.append(f'<line x1="{x1 + 200}" y1="{y1 + 30}" x2="{x2}" y2="{y2 + 30}" '
                     f'stroke="{colour}" marker-end="url(#a)"/>'
                     f'<text x="{(x1 + x2) // 2 + 100}" y="{(y1 + y2) // 2 + 24}">'
                     f'{e(", ".join(edge["data"]))}</text>')  # fmt: skip
    for n in graph["nodes"]:
        x, y = pos[n["id"]]
        stores = e(", ".join(n["stores"]))
        parts.append(f'<rect x="{x}" y="{y}" width="200" height="60" fill="#eef" stroke="#336"/>'
                     f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{e(n["id"])}</text>'
                     f'<text x="{x + 8}" y="{y + 34}">{e(n["kind"])} · {e(n["operator"])}</text>'
                     f'<text x="{x + 8}" y="{y + 50}">{stores}</text>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def write_outputs(graph: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "dataflow.json", out_dir / "dataflow.svg"]
    paths[0].write_text(json.dumps(graph, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths[1].write_text(render_svg(graph), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(8, 5))
    regions = list(graph["regions"])
    xs = {n["id"]: regions.index(n["region"]) for n in graph["nodes"]}
    ys: dict[str, int] = {}
    count: dict[int, int] = {}
    for n in graph["nodes"]:
        count[xs[n["id"]]] = count.get(xs[n["id"]], 0) + 1
        ys[n["id"]] = count[xs[n["id"]]]
    for edge in graph["edges"]:
        ax.annotate("", (xs[edge["to"]], ys[edge["to"]]), (xs[edge["from"]], ys[edge["from"]]),
                    arrowprops={"arrowstyle": "->"})  # fmt: skip
    for n in graph["nodes"]:
        ax.text(xs[n["id"]], ys[n["id"]], f"{n['id']}\n{', '.join(n['stores'])}", ha="center",
                bbox={"boxstyle": "round", "fc": "#eef"})  # fmt: skip
    ax.set_xticks(range(len(regions)), regions)
    ax.set_xlim(-0.7, len(regions) - 0.3)
    ax.set_ylim(0, max(ys.values() or [1]) + 1)
    ax.set_yticks([])
    ax.set_title(f"data flow: {graph['controller']['name']}")
    png = out_dir / "dataflow.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [*paths, png]


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
