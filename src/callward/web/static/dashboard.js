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

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("plan-form").addEventListener("submit", submitPlan);
  document.getElementById("audit-verify").addEventListener("click", verifyAudit);
  verifyAudit();
});
