// callward dashboard: the planner form and the audit chain badge. Vanilla JS, no build step.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

async function verifyAudit() {
  const badge = document.getElementById("audit-status");
  badge.className = "badge pending";
  badge.textContent = "audit trail: checking…";
  try {
    const r = await fetch("/api/v1/audit/verify", { headers: { Accept: "application/json" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    badge.className = "badge " + (body.intact ? "ok" : "bad");
    badge.textContent = body.intact
      ? `audit trail: intact (${body.entries} ${body.entries === 1 ? "entry" : "entries"})`
      : `audit trail: BROKEN: ${body.problems[0]}`;
    badge.title = body.head ? `head #${body.head.seq} ${body.head.hash}` : "";
  } catch (err) {
    badge.className = "badge bad";
    badge.textContent = "audit trail: unavailable (" + err.message + ")";
  }
}

function planRequest(form) {
  const f = new FormData(form);
  const req = {
    codec: f.get("codec"),
    ptime_ms: Number(f.get("ptime_ms")),
    srtp: f.get("srtp"),
    ip_version: Number(f.get("ip_version")),
    voice_activity: Number(f.get("voice_activity")),
    minutes: Number(f.get("minutes")),
    rohc: f.get("rohc") !== null,
    rtcp: f.get("rtcp") !== null,
  };
  if (f.get("bitrate")) req.bitrate = Number(f.get("bitrate"));
  return req;
}

function showPlan(out, body) {
  const p = body.plan;
  const rows = [
    ["bytes per minute (one direction)", p.bytes_per_minute.toLocaleString("en")],
    ["kbit/s (one direction)", p.kbit_per_second],
    ["packet bytes", `${p.packet_bytes} (${p.header_bytes} header)`],
    ["packets per second", p.packets_per_second],
    [`total for ${body.minutes} min, both directions`,
      (body.bytes_both_directions / 1e6).toFixed(3) + " MB"],
    ["MB per hour, both directions", p.megabytes_per_hour_both_directions],
  ];
  for (const [k, v] of Object.entries(p.breakdown_bytes_per_minute)) {
    rows.push([`  ${k} per minute`, v.toLocaleString("en")]);
  }
  const table = el("table", undefined, "plan");
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", String(v), "num"));
    table.append(tr);
  }
  table.id = "plan-table";
  out.replaceChildren(table);
}

async function submitPlan(ev) {
  ev.preventDefault();
  const out = document.getElementById("plan-result");
  out.replaceChildren(el("p", "planning…"));
  try {
    const r = await fetch("/api/v1/plan", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(planRequest(ev.target)),
    });
    const body = await r.json();
    if (!r.ok) {
      out.replaceChildren(el("p", body.error || r.statusText, "error"));
      return;
    }
    showPlan(out, body);
  } catch (err) {
    out.replaceChildren(el("p", String(err), "error"));
  }
}

function fmt(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function showCapture(out, body) {
  const parts = [];
  const head = el("p", `${body.frames} frames, ${body.streams.length} RTP streams, ` +
    `${body.calls} SIP calls` + (body.problems.length ? `; problems: ${body.problems.join(", ")}` : ""));
  parts.push(head);
  if (body.streams.length) {
    const table = el("table");
    table.id = "capture-table";
    const hr = el("tr");
    for (const h of ["SSRC", "codec", "packets", "lost", "loss %", "max jitter ms",
      "MOS network", "MOS adaptive", "alert"]) hr.append(el("th", h));
    table.append(hr);
    for (const s of body.streams) {
      const tr = el("tr");
      const cells = [s.ssrc, s.codec, s.packets, s.lost, fmt(s.loss_pct, 2), fmt(s.max_jitter_ms, 1),
        fmt(s.mos.network, 2), fmt(s.mos.adaptive, 2), s.alert ? `${s.alert.level} (${s.alert.cause})` : ""];
      for (const c of cells) tr.append(el("td", String(c)));
      table.append(tr);
    }
    parts.push(table);
  }
  if (body.plot_png_base64) {
    const img = el("img");
    img.id = "capture-plot";
    img.alt = "per-stream jitter, loss and MOS over time";
    img.src = "data:image/png;base64," + body.plot_png_base64;
    parts.push(img);
  }
  out.replaceChildren(...parts);
}

async function submitCapture(ev) {
  ev.preventDefault();
  const out = document.getElementById("capture-result");
  const f = new FormData(ev.target);
  const file = f.get("capture");
  if (!file || !file.size) {
    out.replaceChildren(el("p", "choose a capture file first", "error"));
    return;
  }
  out.replaceChildren(el("p", "analysing…"));
  const q = new URLSearchParams({ window_s: f.get("window_s") || "1", plot: "true" });
  try {
    const r = await fetch("/api/v1/quality/analyze?" + q, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream", Accept: "application/json" },
      body: file,
    });
    const body = await r.json();
    if (!r.ok) {
      out.replaceChildren(el("p", body.error || r.statusText, "error"));
      return;
    }
    showCapture(out, body);
  } catch (err) {
    out.replaceChildren(el("p", String(err), "error"));
  }
}

function kv(pairs) {
  const table = el("table", undefined, "kv");
  for (const [k, v] of pairs) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v === null || v === undefined ? "–" : String(v)));
    table.append(tr);
  }
  return table;
}

function showDetail(out, d) {
  const q = d.quality;
  const summary = kv([
    ["call id", d.call_id],
    ["caller → callee", `${d.caller} → ${d.callee}`],
    ["start (UTC)", d.start_utc],
    ["disposition", `${d.disposition} ${d.status}`],
    ["duration s", d.duration_s],
    ["MOS (worst leg)", fmt(d.mos, 2)],
    ["quality", q.level ? `${q.level}: ${q.cause}` : "ok"],
    ["lineage", d.lineage.transformations.join(" → ")],
  ]);
  summary.id = "detail-summary";
  const legs = el("table");
  legs.id = "detail-legs";
  const hr = el("tr");
  for (const h of ["leg", "nodes", "status", "reason", "codecs", "packets", "lost", "loss %",
    "jitter ms", "MOS"]) hr.append(el("th", h));
  legs.append(hr);
  for (const lg of d.legs) {
    const tr = el("tr");
    for (const c of [lg.leg, lg.nodes.join(", "), lg.status, lg.reason, lg.codecs.join(", "),
      lg.packets, lg.lost, fmt(lg.loss_pct, 2), fmt(lg.jitter_ms, 1), fmt(lg.mos, 2)]) {
      tr.append(el("td", String(c ?? "–")));
    }
    legs.append(tr);
  }
  out.replaceChildren(summary, legs);
}

async function submitDetail(ev) {
  ev.preventDefault();
  const out = document.getElementById("detail-result");
  const f = new FormData(ev.target);
  const id = String(f.get("call_id") || "").trim();
  if (!id) {
    out.replaceChildren(el("p", "enter or click a call id", "error"));
    return;
  }
  out.replaceChildren(el("p", "loading…"));
  try {
    const reveal = f.get("reveal") !== null ? "?reveal=true" : "";
    const r = await fetch("/api/v1/calls/" + encodeURIComponent(id) + reveal, {
      headers: {
        Accept: "application/json",
        "X-Callward-Reason": String(f.get("reason") || ""),
        "X-Callward-Ticket": String(f.get("ticket") || ""),
      },
    });
    const body = await r.json();
    if (!r.ok) {
      out.replaceChildren(el("p", body.error || r.statusText, "error"));
      return;
    }
    showDetail(out, body);
  } catch (err) {
    out.replaceChildren(el("p", String(err), "error"));
  }
}

async function submitLogin(ev) {
  ev.preventDefault();
  const out = document.getElementById("login-result");
  const token = String(new FormData(ev.target).get("token") || "");
  const r = await fetch("/api/v1/session", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token }),
  });
  if (r.ok) {
    window.location.reload();
    return;
  }
  let msg = r.statusText;
  try { msg = (await r.json()).error || msg; } catch (_) { /* keep status text */ }
  out.replaceChildren(el("p", msg, "error"));
}

async function signOut() {
  await fetch("/api/v1/session", { method: "DELETE" });
  window.location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("login-form");
  if (login) {
    login.addEventListener("submit", submitLogin);
    return;  // the sign-in page has nothing else
  }
  const out = document.getElementById("sign-out");
  if (out) out.addEventListener("click", signOut);
  const detail = document.getElementById("detail-form");
  detail.addEventListener("submit", submitDetail);
  for (const b of document.querySelectorAll("button.open-call")) {
    b.addEventListener("click", () => {
      detail.elements.call_id.value = b.dataset.callId;
      detail.scrollIntoView({ behavior: "smooth", block: "nearest" });
      detail.elements.reason.focus();
    });
  }
  document.getElementById("capture-form").addEventListener("submit", submitCapture);
  document.getElementById("plan-form").addEventListener("submit", submitPlan);
  document.getElementById("audit-verify").addEventListener("click", verifyAudit);
  verifyAudit();
});
