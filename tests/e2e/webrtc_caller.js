// A WebRTC caller signalled with SIP over WebSocket (RFC 7118), written for the test only:
// INVITE with the browser's own offer (ICE, DTLS-SRTP), digest answer to the 407 (SHA-256,
// RFC 8760), ACK, wait for audio both ways (getStats), BYE. Returns what it saw.
"use strict";

const rnd = () => Math.random().toString(36).slice(2, 12);
const enc = new TextEncoder();

async function H(alg, text) {
  const name = alg.toUpperCase().startsWith("SHA-256") ? "SHA-256" : null;
  if (!name) throw new Error("unsupported digest algorithm " + alg);
  const h = await crypto.subtle.digest(name, enc.encode(text));
  return [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function parse(text) {
  const cut = text.indexOf("\r\n\r\n");
  const lines = text.slice(0, cut).split("\r\n");
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    const name = line.slice(0, i).trim().toLowerCase();
    (headers[name] = headers[name] || []).push(line.slice(i + 1).trim());
  }
  const m = /^SIP\/2\.0 (\d{3})/.exec(lines[0]);
  return { start: lines[0], status: m ? Number(m[1]) : 0, headers, body: text.slice(cut + 4) };
}

function params(challenge) {
  const out = {};
  for (const m of challenge.replace(/^Digest\s+/i, "").matchAll(/(\w+)=("([^"]*)"|[^,\s]*)/g)) {
    out[m[1].toLowerCase()] = m[3] !== undefined ? m[3] : m[2];
  }
  return out;
}

async function callBob(cfg) {
  const log = [];
  const ws = new WebSocket(cfg.ws, "sip");
  const inbox = [];
  let waiter = null;
  ws.onmessage = (ev) => {
    const msg = parse(ev.data);
    if (!msg.status) {  // a request toward us: answer BYE/OPTIONS with 200
      const h = msg.headers;
      const resp = ["SIP/2.0 200 OK", ...h["via"].map((v) => "Via: " + v), "From: " + h["from"][0],
        "To: " + h["to"][0], "Call-ID: " + h["call-id"][0], "CSeq: " + h["cseq"][0],
        "Content-Length: 0", "", ""].join("\r\n");
      ws.send(resp);
      log.push("got " + msg.start.split(" ")[0]);
      return;
    }
    inbox.push(msg);
    if (waiter) { const w = waiter; waiter = null; w(); }
  };
  await new Promise((ok, err) => { ws.onopen = ok; ws.onerror = () => err(new Error("ws error")); });
  const next = async (ms = 10000) => {
    const t0 = Date.now();
    while (!inbox.length) {
      if (Date.now() - t0 > ms) throw new Error("no SIP response; log: " + log.join(" | "));
      await new Promise((ok) => { waiter = ok; setTimeout(ok, 200); });
    }
    return inbox.shift();
  };

  const pc = new RTCPeerConnection({ rtcpMuxPolicy: "require" });
  const media = await navigator.mediaDevices.getUserMedia({ audio: true });
  media.getTracks().forEach((t) => pc.addTrack(t, media));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok();
    setTimeout(ok, 3000);
  });
  const offer = pc.localDescription.sdp;

  const host = rnd() + ".invalid";
  const callId = rnd() + rnd();
  const fromTag = rnd();
  const from = `<sip:${cfg.user}@${cfg.realm}>;tag=${fromTag}`;
  const uri = cfg.target;
  const contact = `<sip:${cfg.user}@${host};transport=ws>`;
  const request = (method, cseq, { ruri = uri, to = `<${uri}>`, branch = "z9hG4bK" + rnd(),
                                     extra = [], body = "" } = {}) =>
    [`${method} ${ruri} SIP/2.0`, `Via: SIP/2.0/WSS ${host};branch=${branch};rport`,
     "Max-Forwards: 70", `From: ${from}`, `To: ${to}`, `Call-ID: ${callId}`,
     `CSeq: ${cseq} ${method}`, ...extra, `Content-Length: ${enc.encode(body).length}`, "",
     body].join("\r\n");
  const sdpHeaders = [`Contact: ${contact}`, "Content-Type: application/sdp"];

  let branch = "z9hG4bK" + rnd();
  ws.send(request("INVITE", 1, { branch, extra: sdpHeaders, body: offer }));
  let resp;
  while ((resp = await next()).status < 200) log.push(resp.status);
  log.push(resp.status);
  if (resp.status === 407 || resp.status === 401) {
    ws.send(request("ACK", 1, { branch, to: resp.headers["to"][0] }));  // non-2xx: same branch
    const ch = params((resp.headers["proxy-authenticate"] || resp.headers["www-authenticate"])[0]);
    const alg = ch.algorithm || "MD5";
    const cnonce = rnd(), nc = "00000001";
    const ha1 = await H(alg, `${cfg.user}:${ch.realm}:${cfg.password}`);
    const ha2 = await H(alg, `INVITE:${uri}`);
    const response = await H(alg, `${ha1}:${ch.nonce}:${nc}:${cnonce}:auth:${ha2}`);
    let auth = `Digest username="${cfg.user}", realm="${ch.realm}", nonce="${ch.nonce}", ` +
      `uri="${uri}", response="${response}", algorithm=${alg}, qop=auth, nc=${nc}, ` +
      `cnonce="${cnonce}"`;
    if (ch.opaque) auth += `, opaque="${ch.opaque}"`;
    const header = resp.status === 407 ? "Proxy-Authorization" : "Authorization";
    ws.send(request("INVITE", 2, { extra: [...sdpHeaders, `${header}: ${auth}`], body: offer }));
    while ((resp = await next()).status < 200) log.push(resp.status);
    log.push(resp.status);
  }
  if (resp.status !== 200) return { status: resp.status, log };
  const cseq = Number(resp.headers["cseq"][0].split(" ")[0]);
  const to = resp.headers["to"][0];
  const target = /<([^>]+)>/.exec(resp.headers["contact"][0])[1];
  const routes = (resp.headers["record-route"] || []).flatMap((v) => v.split(/,\s*(?=<)/)).reverse();
  const inDialog = (method, seq) => request(method, seq, { ruri: target, to,
    extra: routes.map((r) => "Route: " + r) });
  ws.send(inDialog("ACK", cseq));
  await pc.setRemoteDescription({ type: "answer", sdp: resp.body });

  const stats = async () => {
    const out = { inbound: 0, outbound: 0, dtls: "", pair: "" };
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") out.inbound = s.packetsReceived;
      if (s.type === "outbound-rtp" && s.kind === "audio") out.outbound = s.packetsSent;
      if (s.type === "transport") { out.dtls = s.dtlsState; out.srtpCipher = s.srtpCipher; }
    });
    return out;
  };
  let seen = await stats();
  const t0 = Date.now();
  while ((seen.inbound < cfg.packets || seen.outbound < cfg.packets) && Date.now() - t0 < 15000) {
    await new Promise((ok) => setTimeout(ok, 250));
    seen = await stats();
  }
  const answerSdp = resp.body;
  const connection = pc.connectionState;
  ws.send(inDialog("BYE", cseq + 1));
  const bye = await next();
  ws.close();
  pc.close();
  return { status: 200, bye: bye.status, log, ...seen, connection,
           answerHasIceLite: answerSdp.includes("a=ice-lite") };
}
