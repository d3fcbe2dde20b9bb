"""Flood and storm against ``callward edge`` with its default security (issue 15, "Proven").

1. **Flood**: a SIPp uac sends unauthenticated INVITEs at >= 20x the rate of a second SIPp
   that places authenticated calls (digest, 50 accounts) through the edge to a SIPp uas. Each
   runs from its own loopback address. Reported: legit calls ok / failed, the flood's answers,
   the edge's RSS before/after, and whether the edge kept answering OPTIONS.
2. **Storm**: 1,000 phones behind one address (one UDP socket) re-register at once; each answers
   its 401 with digest and obeys ``503`` + ``Retry-After``. Reported: time until all are
   registered, 503s seen, bans (sources refused in silence: must be 0).

    python benchmarks/edge_security_flood.py [--legit-rate 10] [--factor 20] [--seconds 15]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from callward.edge.subscribers import SqliteSubscribers, Subscriber
from peers import callward_edge, free_port, metric, sipp_counts, sipp_uas

HERE = Path(__file__).parent
REALM = "callward.local"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _edge_pid(proc_pid: int) -> int:
    """The python process behind the ``callward`` entry point (it may be the same)."""
    return proc_pid


def _provision(work: Path, users: list[tuple[str, str]]) -> str:
    db = work / "subs.sqlite"
    subs = SqliteSubscribers(db)
    for user, password in users:
        subs.put(Subscriber.from_password(user, REALM, password))
    subs.close()
    return f"sqlite:{db}"


def flood(work: Path, legit_rate: int, factor: int, seconds: int) -> dict[str, object]:
    accounts = max(1, legit_rate)  # one call/s per account (the toll-fraud CPS limit)
    users = [(f"u{i:03d}", f"pw-{i:03d}") for i in range(accounts)]
    db = _provision(work, users)
    template = (HERE / "edge_auth_uac.xml").read_text()
    edge, uas, metrics = free_port(), free_port(), free_port()
    per_user = seconds  # calls per account at 1/s
    legit_calls = per_user * accounts
    flood_rate = legit_rate * factor
    with (
        sipp_uas(work, uas),
        callward_edge(
            work, "--listen", f"udp:127.0.0.1:{edge}", "--subscribers", db,
            "--route", f"service=sip:service@127.0.0.1:{uas}", "--metrics", f"127.0.0.1:{metrics}",
        ) as proc,
    ):  # fmt: skip
        rss0 = _rss_kb(proc.pid)
        flood_stats = work / "flood.csv"
        legit = []
        for user, password in users:
            xml = work / f"uac-{user}.xml"
            xml.write_text(template.replace("USER@", f"{user}@"))
            stats = work / f"legit-{user}.csv"
            legit.append((stats, [
                "sipp", "-sf", str(xml), f"127.0.0.1:{edge}", "-i", "127.0.0.2",
                "-p", str(free_port()), "-s", "service", "-au", user, "-ap", password,
                "-auth_uri", f"service@127.0.0.1:{edge}",
                "-r", "1", "-m", str(per_user), "-nostdin", "-timeout", f"{seconds + 40}s",
                "-trace_stat", "-stf", str(stats), "-fd", "1",
            ]))  # fmt: skip
        flood_cmd = [
            "sipp", "-sn", "uac", f"127.0.0.1:{edge}", "-i", "127.0.0.3", "-p", str(free_port()),
            "-s", "service", "-r", str(flood_rate), "-m", str(flood_rate * seconds),
            "-recv_timeout", "2000", "-nostdin", "-timeout", f"{seconds + 20}s",
            "-trace_stat", "-stf", str(flood_stats), "-fd", "1", "-bg",
        ]  # fmt: skip
        fl = subprocess.Popen(flood_cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = fl.communicate(timeout=30)[0].decode(errors="replace")
        m = re.search(r"PID=\[(\d+)\]", out)
        flood_pid = int(m.group(1)) if m else None
        t0 = time.monotonic()
        running = [
            (stats, subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))
            for stats, cmd in legit
        ]  # fmt: skip
        ok = failed = 0
        for stats, p in running:
            try:
                p.wait(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                p.kill()
            counts = sipp_counts(stats) or (0, per_user)
            ok, failed = ok + counts[0], failed + counts[1]
        rss1 = _rss_kb(proc.pid)
        # the edge still answers while the flood runs
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.4", 0))
        sock.settimeout(2)
        opt = (
            f"OPTIONS sip:127.0.0.1:{edge} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:"
            f"{sock.getsockname()[1]};branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:probe@{REALM}>;tag=1\r\nTo: <sip:127.0.0.1:{edge}>\r\n"
            "Call-ID: probe1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(opt, ("127.0.0.1", edge))
        try:
            responsive = sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            responsive = False
        sock.close()
        if flood_pid is not None:
            import os
            import signal

            try:
                os.kill(flood_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    invites = metric(text, 'callward_edge_requests_total{method="INVITE"}')
    refused = {
        r: metric(text, f'callward_edge_rejected_total{{reason="{r}"}}')
        for r in ("unauth-source", "unauth-total", "auth", "overload", "banned")
    }
    return {
        "legit_rate": legit_rate, "flood_rate": flood_rate, "seconds": round(time.monotonic() - t0),
        "legit_ok": ok, "legit_failed": failed,
        "legit_success": round(ok / max(1, legit_calls), 4),
        "edge_invites_seen": invites, "refused": refused,
        "rss_kb_before": rss0, "rss_kb_after": rss1, "responsive_during_flood": responsive,
    }  # fmt: skip


def storm(work: Path, phones: int) -> dict[str, object]:
    users = [(f"p{i:04d}", f"pw{i:04d}") for i in range(phones)]
    db = _provision(work, users)
    edge, metrics = free_port(), free_port()
    with callward_edge(
        work, "--listen", f"udp:127.0.0.1:{edge}", "--subscribers", db,
        "--metrics", f"127.0.0.1:{metrics}",
    ):  # fmt: skip
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.5", 0))  # the NAT: one address, one port
        sock.setblocking(False)
        lport = sock.getsockname()[1]
        due = {i: 0.0 for i in range(phones)}  # phone -> when to (re)send
        cseq = dict.fromkeys(range(phones), 1)
        auth: dict[int, str] = {}
        done: set[int] = set()
        got_503 = 0
        t0 = time.monotonic()
        deadline = t0 + 300
        sent_at: dict[int, float] = {}
        while len(done) < phones and time.monotonic() < deadline:
            now = time.monotonic() - t0
            for i in [i for i, t in due.items() if t <= now][:200]:
                del due[i]
                sent_at[i] = now
                user = users[i][0]
                lines = [
                    f"REGISTER sip:127.0.0.1:{edge} SIP/2.0",
                    f"Via: SIP/2.0/UDP 127.0.0.5:{lport};branch=z9hG4bK{i}x{cseq[i]};rport",
                    f"From: <sip:{user}@{REALM}>;tag={i}", f"To: <sip:{user}@{REALM}>",
                    f"Call-ID: storm-{i}", f"CSeq: {cseq[i]} REGISTER",
                    f"Contact: <sip:{user}@127.0.0.5:{lport}>", "Max-Forwards: 70",
                    "Expires: 600", "User-Agent: storm-phone/1.0",
                ]  # fmt: skip
                if i in auth:
                    lines.append(f"Authorization: {auth[i]}")
                data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
                sock.sendto(data, ("127.0.0.1", edge))
            for _ in range(2000):
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                head = data.decode(errors="replace")
                m = re.search(r"Call-ID: storm-(\d+)", head)
                if m is None:
                    continue
                i = int(m.group(1))
                status = int(head[8:11])
                cseq[i] += 1
                if status == 200:
                    done.add(i)
                elif status == 401:
                    chal = re.search(r"WWW-Authenticate: (Digest [^\r\n]+)", head)
                    if chal:
                        auth[i] = _answer(chal.group(1), users[i][0], users[i][1], edge)
                    due[i] = now
                elif status == 503:
                    got_503 += 1
                    ra = re.search(r"Retry-After: (\d+)", head)
                    due[i] = now + (int(ra.group(1)) if ra else 5)
            # silence for 4 s = a drop (or a ban): retry like a phone's Timer E would
            for i, t in list(sent_at.items()):
                if i not in done and i not in due and now - t > 4:
                    due[i] = now
                    del sent_at[i]
                    auth.pop(i, None)  # like a phone: start over with a fresh challenge
                    cseq[i] += 1
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        sock.close()
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    alerts = {
        r: metric(text, f'callward_edge_security_alerts_total{{rule="{r}"}}')
        for r in ("password-guessing", "scanner-user-agent", "extension-scan", "options-sweep",
                  "account-lockout")
    }  # fmt: skip
    bans = sum(v for r, v in alerts.items() if r != "account-lockout")
    return {
        "phones": phones, "registered": len(done), "seconds": round(elapsed, 1),
        "retry_after_503s": got_503, "bans": bans, "alerts": alerts,
        "refused": {
            r: metric(text, f'callward_edge_rejected_total{{reason="{r}"}}')
            for r in ("unauth-source", "auth-source", "account", "banned", "auth", "overload")
        },
    }  # fmt: skip


def _answer(chal: str, user: str, password: str, edge: int) -> str:
    params = dict(p.strip().split("=", 1) for p in chal[len("Digest ") :].split(","))
    params = {k.strip(): v.strip().strip('"') for k, v in params.items()}
    uri = f"sip:127.0.0.1:{edge}"

    def H(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = H(f"{user}:{params['realm']}:{password}")
    resp = H(f"{ha1}:{params['nonce']}:00000001:cn:auth:{H(f'REGISTER:{uri}')}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="cn"'
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legit-rate", type=int, default=10)
    ap.add_argument("--factor", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--phones", type=int, default=1000)
    ap.add_argument("--only", choices=["flood", "storm"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "flood").mkdir()
        (work / "storm").mkdir()
        result: dict[str, object] = {}
        if args.only in (None, "flood"):
            result["flood"] = flood(work / "flood", args.legit_rate, args.factor, args.seconds)
        if args.only in (None, "storm"):
            result["storm"] = storm(work / "storm", args.phones)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
