"""`callward analyze` (capture → streams, loss, jitter, MOS, root cause) and `callward mos`."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import typer

from callward.cli.exits import fail as _fail
from callward.errors import CallwardError


def _table(rep: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from callward.quality.report import AnalysisReport, stream_dict

    assert isinstance(rep, AnalysisReport)
    con = Console()
    t = Table(title="RTP streams")
    for col in ("src", "dst", "SSRC", "codec", "pkts", "lost", "max Δ ms", "max jit ms",
                "mean jit ms", "MOS net/50/200/adapt"):  # fmt: skip
        t.add_column(col)
    for s in rep.streams:
        d = stream_dict(s)
        m = d["mos"] or {}
        mos = "/".join(
            f"{m[k]['mos']:.2f}" if m.get(k) else "-"
            for k in ("network", "fixed50", "fixed200", "adaptive")
        )
        t.add_row(d["src"], d["dst"], d["ssrc"], d["codec"], str(d["packets"]),
                  f"{d['lost']} ({d['loss_pct']:.1f}%)", f"{d['max_delta_ms']:.2f}",
                  f"{d['max_jitter_ms']:.2f}", f"{d['mean_jitter_ms']:.2f}", mos)  # fmt: skip
    con.print(t)
    for c in rep.calls:
        probs = ", ".join(p.kind + (f" ({p.cause})" if p.cause else "") for p in c.problems) or "ok"
        con.print(f"call {c.call_id}: status {c.final_status}, {probs}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command()
    def analyze(
        capture: Path = typer.Argument(..., help="pcap or pcapng file"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
        plot: Path | None = typer.Option(None, "--plot", help="write a PNG of jitter/loss/MOS"),
        no_mos: bool = typer.Option(False, "--no-mos", help="stream statistics only"),
        config: Path | None = typer.Option(None, "--config", help="callward.yaml"),
        tenant: str = typer.Option("default", "--tenant", help="whose MOS thresholds apply"),
    ) -> None:
        """Streams, loss, jitter, MOS per playout model and call root causes of a capture.

        Exit 1 when a call problem is classified, 2 when the capture cannot be read.
        """
        from callward.quality.alerts import DEFAULTS, Thresholds, thresholds_for
        from callward.quality.report import analyze_capture

        cfg: Any
        if config is None and not any(k.startswith("CALLWARD_QUALITY__") for k in os.environ):
            # Defaults: no YAML to validate, so pydantic (~0.1 s of start-up) is not loaded.
            cfg = SimpleNamespace(**DEFAULTS)
            th = Thresholds(DEFAULTS["mos_warn"], DEFAULTS["mos_critical"])
        else:
            from callward.config import load_config

            try:
                cfg = load_config(config).quality  # YAML + CALLWARD_QUALITY__* overrides
            except CallwardError as exc:
                raise _fail(str(exc)) from None
            th = thresholds_for(cfg, tenant)
        progress = None
        if sys.stderr.isatty() and not json_out:
            # A spinner with a frame count on a terminal; silent when piped (design.md).
            from rich.progress import Progress, SpinnerColumn, TextColumn

            progress = Progress(SpinnerColumn(), TextColumn("{task.completed:,} frames read"),
                                transient=True)  # fmt: skip
        try:
            if progress is not None:
                with progress:
                    task = progress.add_task("read", total=None)
                    rep = analyze_capture(
                        capture, base_delay_ms=cfg.base_delay_ms, rtp_timeout_s=cfg.rtp_timeout_s,
                        pdd_warn_s=cfg.pdd_warn_s, mos=not no_mos,
                        thresholds=th, progress=lambda k: progress.advance(task, k),
                    )  # fmt: skip
            else:
                rep = analyze_capture(
                    capture, base_delay_ms=cfg.base_delay_ms, rtp_timeout_s=cfg.rtp_timeout_s,
                    pdd_warn_s=cfg.pdd_warn_s, mos=not no_mos,
                    thresholds=th,
                )  # fmt: skip
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        if json_out:
            typer.echo(json.dumps(rep.as_dict(), indent=1))
        else:
            _table(rep)
        if plot is not None:
            from callward.quality.plot import plot_streams

            plot_streams(rep.streams, plot)
        if rep.problems:
            raise typer.Exit(1)

    @app.command()
    def mos(
        codec: str = typer.Option(
            "g711",
            "--codec",
            help="g711, g711-noplc, g729a, ... (G.107); opus, amr-wb, g722 (G.107.1 wideband)",
        ),
        bitrate: float | None = typer.Option(
            None,
            "--bitrate",
            help="bit/s, for codecs whose impairment depends on it (opus, amr-wb)",
        ),
        loss: float = typer.Option(0.0, "--loss", help="packet loss in percent"),
        delay: float = typer.Option(0.0, "--delay", help="one-way mouth-to-ear delay, ms"),
        burst: float = typer.Option(1.0, "--burst", help="BurstR (1 = random loss)"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """ITU-T G.107 E-model: R and MOS for a codec, loss, delay and burstiness."""
        from callward.quality import emodel, emodel_wb

        vals = (loss, delay, burst) + ((bitrate,) if bitrate is not None else ())
        if any(math.isnan(v) or math.isinf(v) for v in vals):
            raise _fail("loss, delay, burst and bitrate must be finite numbers")
        try:
            est = emodel_wb.mos_for(codec, bitrate, loss, burst, delay)
            if est.scale == "nb" and est.codec != "opus":
                d: dict[str, object] = dict(emodel.quick(codec, loss, delay, burst).as_dict())
            else:
                d = {"ro": emodel_wb.RO_WB if est.scale == "wb" else 93.2, "is": 0.0}
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        d.update(est.as_dict())
        d["r"] = round(est.r, 2)
        d["mos"] = round(est.mos, 2)
        if json_out:
            typer.echo(json.dumps(d))
        else:
            rate = f" at {est.kbps:g} kbit/s" if est.kbps else ""
            typer.echo(f"R = {d['r']:.2f}  MOS = {d['mos']:.2f}  (Ie,eff {est.ie_eff:.2f}, "
                       f"Id {est.id:.2f}, Ro {d['ro']:.2f}; {est.codec}{rate}, "
                       f"{'G.107.1 wideband' if est.scale == 'wb' else 'G.107'}; Ie from "
                       f"{est.source})")  # fmt: skip
