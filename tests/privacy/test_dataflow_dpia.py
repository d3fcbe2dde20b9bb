"""Data-flow map and DPIA/DPA checks on a realistic 3-region deployment
(docs/examples/deployment-3-regions.yaml): snapshot of the graph, every violation kind exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import ConfigError
from callward.privacy.dataflow import dataflow_graph, load_deployment, render_svg

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "deployment-3-regions.yaml"
SNAPSHOT = ROOT / "tests" / "vectors" / "dataflow-3-regions.json"
TODAY = "2026-12-02"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    edit(data)
    p = tmp_path / "dep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_dataflow_snapshot_and_outputs(tmp_path: Path) -> None:
    graph = dataflow_graph(load_deployment(EXAMPLE))
    assert graph == json.loads(SNAPSHOT.read_text())
    out = tmp_path / "df"
    r = run("privacy", "dataflow", "--deployment", str(EXAMPLE), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert json.loads((out / "dataflow.json").read_text()) == graph
    svg = (out / "dataflow.svg").read_text()
    assert svg.startswith("<svg") and "relay-us" in svg and 'stroke="red"' not in svg
    if (out / "dataflow.png").exists():
        assert (out / "dataflow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every transfer out of the EEA names its safeguard
    assert {t["target"]: t["safeguard"] for t in graph["transfers"] if t["needs_safeguard"]} == {
        "relay-us": "standard contractual clauses (MediaCo Inc.)",
        "support-in": "standard contractual clauses (SupportCo Pvt Ltd)",
    }


def test_transfer_without_safeguard_is_flagged(tmp_path: Path) -> None:
    def no_sccs(d):
        d["processors"][1]["sccs"] = False

    dep = _variant(tmp_path, no_sccs)
    graph = dataflow_graph(load_deployment(dep))
    assert graph["unsafeguarded"] == ["controller -> support-in (DE -> IN)",
                                      "edge-fra -> support-in (DE -> IN)"]  # fmt: skip
    assert 'stroke="red"' in render_svg(graph)
    assert run("privacy", "dataflow", "--deployment", str(dep), "--out",
               str(tmp_path / "o")).exit_code == 1  # fmt: skip
    r = run("privacy", "dpia", "check", "--deployment", str(dep), "--today", TODAY)
    assert r.exit_code == 1 and "VIOLATION transfer" in r.stdout


def test_example_deployment_passes_with_a_warning_for_the_expiring_dpa() -> None:
    r = run("privacy", "dpia", "check", "--deployment", str(EXAMPLE), "--today", TODAY, "--json")
    assert r.exit_code == 0, r.output
    assert [(f["severity"], f["register"]) for f in json.loads(r.stdout)] == [("warning", "dpa")]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["components"][2].update(region="cn-north")
         or d["regions"].update({"cn-north": {"country": "CN"}})
         or d["processors"][0]["dpa"]["regions"].append("cn-north"),
         "relay-us runs in excluded region cn-north"),
        (lambda d: d["components"][2].update(consent_gated=False),
         "relay-us records without the consent gate"),
        (lambda d: d["dpias"][0]["mitigations"].update(max_retention_days={"recording": 30}),
         "recording kept 90 d for tenant (default), DPIA allows 30 d"),
        (lambda d: d["processors"][0].pop("dpa"), "MediaCo Inc.: no DPA on file"),
        (lambda d: d["processors"][0]["dpa"].update(expires="2026-11-30"), "DPA expired"),
        (lambda d: d["processors"][0]["dpa"].update(scope=["cdr"]),
         "processes recording outside the DPA's scope"),
        (lambda d: d["dpias"][1].update(risks=[]), "no risks assessed"),
    ],
)  # fmt: skip
def test_each_violation_exits_1(tmp_path: Path, edit, needle: str) -> None:
    dep = _variant(tmp_path, edit)
    r = run("privacy", "dpia", "check", "--deployment", str(dep), "--today", TODAY)
    assert r.exit_code == 1, r.output
    assert needle in r.stdout


def test_recording_jurisdiction_without_consent_rule_is_a_violation(tmp_path: Path) -> None:
    cfg = tmp_path / "callward.yaml"
    cfg.write_text("privacy: {record_calls: true, recording_jurisdiction: MARS}\n")
    r = run("privacy", "dpia", "check", "--deployment", str(EXAMPLE), "--today", TODAY,
            "--config", str(cfg))  # fmt: skip
    assert r.exit_code == 1 and "recording under 'MARS': no consent rule" in r.stdout


def test_bad_deployment_files_are_config_errors(tmp_path: Path) -> None:
    def unknown_region(d):
        d["components"][0]["region"] = "mars"

    with pytest.raises(ConfigError, match="unknown region 'mars'"):
        load_deployment(_variant(tmp_path, unknown_region))

    def bad_class(d):
        d["components"][0]["stores"] = ["voice"]

    with pytest.raises(ConfigError, match="unknown data class 'voice'"):
        load_deployment(_variant(tmp_path, bad_class))
    (tmp_path / "x.yaml").write_text("[1, 2")
    r = run("privacy", "dpia", "check", "--deployment", str(tmp_path / "x.yaml"))
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
