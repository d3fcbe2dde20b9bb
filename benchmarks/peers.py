"""Harness for the real peers (SIPp, Kamailio, a callward edge process) shared by benchmarks/
and the interop tests, so every script starts, reads and stops them the same way.

It lives here rather than in the installed package because it is test/benchmark tooling:
benchmark scripts import it as a sibling (``python benchmarks/x.py`` puts this directory on
sys.path) and tests/conftest.py puts this directory on sys.path for pytest.

Every process is stopped by the PID we started (or by its own process group / pidfile),
never by name: several engineers run these peers on the same machine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
KAMAILIO_PROXY_CFG = HERE / "kamailio" / "proxy.cfg"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
CALLWARD_CLI = [sys.executable, "-c", "from callward.cli import main; main()"]


# ---------------------------------------------------------------- ports


def free_port(span: tuple[int, int] | None = None) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIPp and the edge bind one or both).

    Without ``span`` the kernel picks it; with ``span`` it is drawn at random from that range
    (sipsak truncates 5-digit ports, so its tests need ports below 10000)."""
    for _ in range(500):
        if span is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
        else:
            port = random.randint(*span)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


# ---------------------------------------------------------------- stopping what we started


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    """Signal our child by PID (SIGINT makes tshark finish its capture file); kill it if it has
    not exited after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a child started with ``start_new_session=True`` and everything it forked (Kamailio
    forks helpers into its group even with fork=no)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_pid(pid: int, wait: float = 5.0) -> None:
    """SIGTERM a daemon we started (SIPp -bg, Kamailio) by its PID; wait up to ``wait`` s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


# ---------------------------------------------------------------- SIPp


def sipp_uas_cmd(port: int, *, transport: str = "u1", extra: Sequence[str] = ()) -> list[str]:
    """SIPp's built-in uas on 127.0.0.1:port."""
    cmd = ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin", *extra]
    return cmd if transport == "u1" else [*cmd, "-t", transport]


@contextlib.contextmanager
def sipp_uas(
    work: Path,
    port: int,
    *,
    transport: str = "u1",
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Iterator[subprocess.Popen]:
    """SIPp uas as our foreground child for the duration of the block."""
    proc = subprocess.Popen(
        [*prefix, *sipp_uas_cmd(port, transport=transport, extra=extra)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
    )
    time.sleep(0.3)  # let it bind
    try:
        yield proc
    finally:
        stop(proc)


def sipp_background(cmd: Sequence[str], work: Path) -> int:
    """Start SIPp with ``-bg`` (it forks) and return the PID it prints as
    ``Background mode - PID=[N]``: the only handle to stop exactly that process."""
    out = subprocess.run([*cmd, "-bg"], capture_output=True, text=True, timeout=20, cwd=work)
    m = re.search(r"PID=\[(\d+)\]", out.stdout + out.stderr)
    if m is None:
        raise RuntimeError(f"SIPp did not go to the background: {out.stdout + out.stderr}")
    return int(m.group(1))


def sipp_client_cmd(
    target: int,
    *,
    calls: int,
    rate: int | None = None,
    scenario: Sequence[str] = ("-sn", "uac"),
    service: str | None = "service",
    transport: str = "u1",
    timeout: str = "60s",
    stats: Path | str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """A bounded SIPp client run (``-m calls``, ``-timeout``) against 127.0.0.1:target from a
    fresh local port; with ``stats`` it writes its counters there (``-trace_stat -stf``)."""
    cmd = ["sipp", *scenario, f"127.0.0.1:{target}", "-i", "127.0.0.1", "-p", str(free_port())]
    if transport != "u1":
        cmd += ["-t", transport]
    if service is not None:
        cmd += ["-s", service]
    if rate is not None:
        cmd += ["-r", str(rate)]
    cmd += ["-m", str(calls), *extra, "-nostdin", "-timeout", timeout]
    if stats is not None:
        cmd += ["-trace_stat", "-stf", str(stats), "-fd", "1"]
    return cmd


def sipp_counts(stats: Path) -> tuple[int, int] | None:
    """(SuccessfulCall(C), FailedCall(C)) from the last row of SIPp's ``-stf`` file, or None
    when SIPp wrote no statistics."""
    if not stats.exists():
        return None
    rows = list(csv.DictReader(stats.read_text().splitlines(), delimiter=";"))
    if not rows:
        return None
    return int(rows[-1]["SuccessfulCall(C)"]), int(rows[-1]["FailedCall(C)"])


@dataclass(frozen=True, slots=True)
class SippRun:
    rc: int
    ok: int
    failed: int
    elapsed: float
    output: str


def run_sipp(cmd: Sequence[str], work: Path, stats: Path, calls: int, timeout: float) -> SippRun:
    """Run a SIPp client to its end. A run wedged past ``timeout`` (or one that wrote no
    statistics) counts every call as failed."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            cmd, cwd=work, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return SippRun(-1, 0, calls, time.monotonic() - t0, "timed out")
    elapsed = time.monotonic() - t0
    ok, failed = sipp_counts(stats) or (0, calls)
    return SippRun(res.returncode, ok, failed, elapsed, (res.stdout + res.stderr)[-3000:])


async def run_sipp_async(cmd: Sequence[str], work: Path, timeout: float) -> tuple[int, str]:
    """Run SIPp as our child while the event loop keeps serving (our UA answers it); kill it by
    PID on timeout or cancellation."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, (out + err).decode(errors="replace")[-2000:]


# ---------------------------------------------------------------- Kamailio


def _kamailio_pid(res: subprocess.CompletedProcess[str], pidfile: Path) -> int:
    """The PID a daemonizing Kamailio wrote (it forks: the pidfile is the only handle)."""
    if res.returncode != 0:
        raise RuntimeError(f"kamailio did not start: {res.stderr[-500:]}")
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError("kamailio wrote no pidfile")
        time.sleep(0.1)
    return int(pidfile.read_text().strip())


@contextlib.contextmanager
def kamailio_proxy(
    work: Path,
    port: int,
    uas: int,
    *,
    memory: tuple[int, int] = (64, 8),
    prefix: Sequence[str] = (),
    settle: float = 0.0,
) -> Iterator[int]:
    """Kamailio with benchmarks/kamailio/proxy.cfg on udp:127.0.0.1:port, forwarding to a uas.
    It daemonizes: we wait for its pidfile and stop exactly that PID."""
    pidfile = work / f"kamailio-{port}.pid"
    res = subprocess.run(
        [*prefix, "kamailio", "-f", str(KAMAILIO_PROXY_CFG), "-P", str(pidfile),
         "-m", str(memory[0]), "-M", str(memory[1]), "-l", f"udp:127.0.0.1:{port}",
         "-A", f'UAS_ADDR="sip:127.0.0.1:{uas}"', "-w", str(work)],
        cwd=work, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    pid = _kamailio_pid(res, pidfile)
    time.sleep(settle)
    try:
        yield pid
    finally:
        kill_pid(pid)


KAMAILIO_RTPENGINE_CFG = Path(__file__).resolve().parent / "kamailio" / "rtpengine.cfg"


@contextlib.contextmanager
def kamailio_media_proxy(
    work: Path, port: int, uas: int, ng: int, *, flags: str | None = None
) -> Iterator[int]:
    """Kamailio with benchmarks/kamailio/rtpengine.cfg: a proxy to the uas that anchors media
    through the ng relay on udp:127.0.0.1:ng with its ``rtpengine`` module."""
    pidfile = work / f"kamailio-{port}.pid"
    cmd = ["kamailio", "-f", str(KAMAILIO_RTPENGINE_CFG), "-P", str(pidfile), "-m", "64",
           "-M", "8", "-l", f"udp:127.0.0.1:{port}", "-A", f'UAS_ADDR="sip:127.0.0.1:{uas}"',
           "-A", f'NG_SOCK="udp:127.0.0.1:{ng}"', "-w", str(work)]  # fmt: skip
    if flags is not None:
        cmd += ["-A", f'RTP_FLAGS="{flags}"']
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=30)
    pid = _kamailio_pid(res, pidfile)
    try:
        yield pid
    finally:
        kill_pid(pid)


@contextlib.contextmanager
def callward_relay(
    work: Path, ng: int, ports: tuple[int, int], *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """``callward relay --ng 127.0.0.1:ng`` with its data under ``work/var`` and media ports in
    ``ports``, once it says it is listening; stopped with SIGTERM (CDRs are flushed)."""
    full = {**os.environ, "CALLWARD_STORAGE__DATA_DIR": str(work / "var"),
            "CALLWARD_MEDIA__RTP_PORT_MIN": str(ports[0]),
            "CALLWARD_MEDIA__RTP_PORT_MAX": str(ports[1]), **(env or {})}  # fmt: skip
    cmd = [*CALLWARD_CLI, "relay", "--ng", f"127.0.0.1:{ng}"]
    with _started(cmd, work, work / f"relay-{ng}.log", "ng on", env=full) as proc:
        yield proc


def sipp_pcap_dir(work: Path) -> Path:
    """SIPp's built-in ``uac_pcap`` plays ``pcap/g711a.pcap`` (and the RFC 2833 digit
    captures) relative to its working directory: copy Debian's into ``work/pcap``."""
    src = Path("/usr/share/sip-tester")
    dst = work / "pcap"
    dst.mkdir(exist_ok=True)
    for f in src.glob("*.pcap"):
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


KAMAILIO_DIGEST_CFG = """#!KAMAILIO
debug={debug}
log_stderror=yes
fork=no
children=1
auto_aliases=no
mpath="{modules}"
listen=udp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "auth.so"
modparam("auth", "algorithm", "{algorithm}")
modparam("auth", "secret", "kamailio-registrar-secret-0123456789")
request_route {{
    if (method=="REGISTER") {{
        if (!pv_www_authenticate("{realm}", "{password}", "0")) {{
            www_challenge("{realm}", "{qop_flag}");
            exit;
        }}
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


def kamailio_registrar(
    work: Path,
    port: int,
    *,
    realm: str,
    password: str,
    algorithm: str = "MD5",
    qop_flag: str = "1",
    debug: int = 0,
    memory: tuple[int, int] = (64, 8),
) -> subprocess.Popen:
    """A one-process Kamailio digest registrar (auth ``pv_www_authenticate`` against one
    plaintext password, any user) in the foreground, in its own process group: stop it with
    :func:`stop_group`."""
    cfg = work / f"kamailio-registrar-{port}.cfg"
    cfg.write_text(
        KAMAILIO_DIGEST_CFG.format(
            debug=debug, modules=KAMAILIO_MODULES, port=port, algorithm=algorithm,
            realm=realm, password=password, qop_flag=qop_flag,
        )
    )  # fmt: skip
    return subprocess.Popen(
        ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", str(memory[0]), "-M", str(memory[1]),
         "-P", str(work / f"kamailio-{port}.pid"), "-Y", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


# ---------------------------------------------------------------- callward edge


@contextlib.contextmanager
def callward_edge(
    work: Path,
    *args: str,
    config: str | None = None,
    prefix: Sequence[str] = (),
) -> Iterator[subprocess.Popen]:
    """``callward edge ARGS`` (plus ``--config`` written from ``config``) as our child, once its
    log says it is listening; its output goes to a log file in ``work``."""
    cmd = [*prefix, *CALLWARD_CLI, "edge", *args]
    if config is not None:
        cfg = work / "callward.yaml"
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    with _started(cmd, work, work / f"edge-{time.monotonic_ns()}.log", "listening on") as proc:
        yield proc


@contextlib.contextmanager
def _started(
    cmd: Sequence[str], work: Path, log: Path, ready: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """A callward command as our child, once its log (``log``) says ``ready``; SIGTERM after."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=work, env=env)
    try:
        deadline = time.monotonic() + 20
        while ready not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[-1]} did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def add_subscriber(work: Path, user: str, password: str) -> str:
    """Provision one subscriber with ``callward edge add-subscriber``; returns the store URL."""
    db = f"sqlite:{work / 'subs.sqlite'}"
    subprocess.run(
        [*CALLWARD_CLI, "edge", "add-subscriber", user, "--password", password,
         "--subscribers", db],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return db


def metric(text: str, name: str) -> float:
    """The first sample called exactly ``name`` (labels included) in Prometheus text; 0 when
    absent, as Prometheus reads a counter that was never incremented."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------- tshark


@contextlib.contextmanager
def tshark_capture(path: Path, ports: Sequence[int]) -> Iterator[None]:
    """tshark writing the loopback UDP traffic of ``ports`` to ``path`` for the duration of the
    block (at most 60 s); the block starts once tshark says it is capturing."""
    log = path.with_suffix(".log")
    flt = " or ".join(f"udp port {p}" for p in ports)
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["tshark", "-i", "lo", "-f", flt, "-w", str(path), "-a", "duration:60", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 20
        while "Capturing on" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"tshark did not start: {log.read_text()}")
            time.sleep(0.05)
        time.sleep(0.3)
        yield
        time.sleep(0.5)  # let the last packets reach the capture
    finally:
        stop(proc, signal.SIGINT, grace=10)


@contextlib.contextmanager
def dumpcap(path: Path, bpf: str) -> Iterator[None]:
    """dumpcap (tshark's lighter capture engine) with a 64 MiB buffer: tshark itself dropped
    thousands of packets of 20 concurrent calls on this loaded machine. Fails the test if the
    kernel reports any drop, since the comparison needs every packet."""
    log = path.with_name(path.stem + "-dumpcap.log")
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["dumpcap", "-i", "lo", "-f", bpf, "-B", "64", "-w", str(path), "-a", "duration:120",
             "-q"], stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while "Capturing on" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    time.sleep(0.3)
    try:
        yield
        time.sleep(0.5)
    finally:
        stop(proc, signal.SIGINT, grace=10)
    dropped = re.search(r"Packets received/dropped on interface .*: \d+/(\d+)", log.read_text())
    assert dropped is None or dropped.group(1) == "0", log.read_text()


def tshark_rtp_streams(capture: Path, *options: str) -> dict[tuple, tuple]:
    """tshark's ``-z rtp,streams`` table: (src, sport, dst, dport, ssrc) → (packets, lost,
    max delta ms, mean jitter ms, max jitter ms). ``options`` tell tshark which UDP is RTP
    (``--enable-heuristic rtp_udp``, or ``-d udp.port==P,sip`` so it follows the SDP)."""
    cmd = ["tshark", "-q", "-n", "-r", str(capture), *options, "-z", "rtp,streams"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 17 and f[6].startswith("0x"):
            r = f[:-1] if f[-1] == "X" else f  # a trailing X marks a stream with problems
            rows[(f[2], int(f[3]), f[4], int(f[5]), int(f[6], 16))] = (
                int(r[-9]), int(r[-8]), float(r[-4]), float(r[-2]), float(r[-1]),
            )  # fmt: skip
    return rows


# ---------------------------------------------------------------- baresip

BARESIP_MODULE_PATH = "/usr/lib/baresip/modules"


def baresip_config(
    directory: Path,
    *,
    sip_port: int,
    modules: Sequence[str],
    account: str,
    settings: Sequence[str] = (),
) -> Path:
    """What ``baresip -f DIR`` reads: ``config`` (listen on 127.0.0.1:sip_port, load
    ``modules`` plus the account and menu apps, then ``settings`` lines), one ``accounts`` line
    and an empty ``contacts``. Returns DIR."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"sip_listen 127.0.0.1:{sip_port}",
        f"module_path {BARESIP_MODULE_PATH}",
        *(f"module {m}" for m in modules),
        "module_app account.so",
        "module_app menu.so",
        *settings,
    ]
    (directory / "config").write_text("\n".join(lines) + "\n")
    (directory / "accounts").write_text(account + "\n")
    (directory / "contacts").write_text("")
    return directory


def silence_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    """A mono 16-bit WAV of silence (what baresip's aufile source plays, then it hangs up)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * int(rate * seconds)))
