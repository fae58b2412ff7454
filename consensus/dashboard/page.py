"""The page: one HTML shell, one script, one style sheet (served from this server only; the
content security policy forbids anything inline).

The script builds every table with ``textContent``, never markup, so a value an agent wrote
is shown as text whatever it holds. Views are sections picked by the address's ``#fragment``
(``/#replicas``, ``/#keys``, ...), so each can be linked and screenshotted. The live page
fetches the replicas' status every poll period (the server polls the cluster at its own
bounded rate and serves its last view), the other views every few seconds while shown, and
holds one event stream for its whole life."""

from __future__ import annotations

__all__ = ["APP_CSS", "APP_JS", "VIEWS", "page_html"]

VIEWS: dict[str, list[tuple[str, str]]] = {
    "live": [("replicas", "Replicas"), ("keys", "Keys"), ("claims", "Claims & leases"),
             ("events", "Live events"), ("policies", "Policies")],
    "chaos": [("chaos", "Chaos run")],
    "experiment": [("experiment", "Experiment")],
}


def page_html(kind: str) -> str:
    nav = "".join(f'<a href="#{name}" id="nav-{name}">{title}</a>'
                  for name, title in VIEWS[kind])
    sections = "".join(f'<section id="view-{name}" class="view" hidden></section>'
                       for name, _ in VIEWS[kind])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>quorumboard dashboard</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head><body data-kind="{kind}">
<header><span class="brand">quorumboard</span><nav>{nav}</nav>
<span id="headline" class="headline"></span></header>
<main>{sections}</main>
</body></html>
"""


APP_CSS = """
:root { --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --muted:#57606a; --line:#d0d7de;
        --bg:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color:#1f2328; background:#fff; }
header { display:flex; align-items:center; gap:18px; padding:10px 18px;
         border-bottom:1px solid var(--line); background:var(--bg); position:sticky; top:0; }
.brand { font-weight:700; }
nav a { margin-right:12px; color:var(--accent); text-decoration:none; padding:4px 2px; }
nav a.current { border-bottom:2px solid var(--accent); font-weight:600; }
.headline { margin-left:auto; color:var(--muted); }
main { padding:14px 18px; }
h2 { font-size:18px; margin:4px 0 10px; }
h3 { font-size:16px; margin:18px 0 8px; }
h4 { font-size:14px; margin:14px 0 6px; }
table { border-collapse:collapse; margin:6px 0 14px; }
div.wide { overflow-x:auto; max-width:100%; }
div.wide td, div.wide th { white-space:nowrap; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left;
         vertical-align:top; }
th { background:var(--bg); font-weight:600; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
td.mono, span.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                     font-size:12px; }
.up { color:var(--ok); font-weight:600; } .down { color:var(--bad); font-weight:600; }
.leader { font-weight:700; }
.badge { display:inline-block; padding:2px 10px; border-radius:12px; font-weight:600; }
.badge.valid, .badge.live { background:#dafbe1; color:var(--ok); }
.badge.invalid, .badge.error { background:#ffebe9; color:var(--bad); }
.badge.unknown, .badge.retrying { background:#fff8c5; color:var(--warn); }
.note { color:var(--muted); margin:4px 0 10px; }
.error { color:var(--bad); }
.controls { margin:4px 0 10px; } .controls input { font:inherit; padding:3px 6px; width:22em; }
.value { max-width:48em; overflow-wrap:anywhere; }
img.plot { max-width:100%; border:1px solid var(--line); margin:4px 0 14px; }
pre { background:var(--bg); padding:8px; white-space:pre-wrap; }
"""

APP_JS = r"""
"use strict";
const KIND = document.body.dataset.kind;
const EVENTS_SHOWN_MAX = 500;
const SEEN_MAX = 5000;
const REFRESH_MS = 2000;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "text") node.textContent = value;
    else if (name === "cls") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
function fmt(value, digits) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && digits !== undefined) return value.toFixed(digits);
  return String(value);
}
function table(headers, rows, numeric) {
  const head = el("tr", {}, ...headers.map((h) => el("th", {text: h})));
  const body = rows.map((row) => {
    const tr = row.tr || el("tr");
    row.cells.forEach((cell, i) => {
      const td = cell instanceof Node ? el("td", {}, cell) : el("td", {text: fmt(cell)});
      if (numeric && numeric.includes(i)) td.classList.add("num");
      tr.append(td);
    });
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}
async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) throw new Error(response.status + " " + (await response.text()));
  return response.json();
}
function section(name) { return document.getElementById("view-" + name); }
function fill(name, ...nodes) { section(name).replaceChildren(...nodes); }
function current() {
  const names = [...document.querySelectorAll("section.view")].map((s) => s.id.slice(5));
  const wanted = location.hash.slice(1);
  return names.includes(wanted) ? wanted : names[0];
}
const loaders = {};
function show() {
  const name = current();
  for (const s of document.querySelectorAll("section.view")) s.hidden = s.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav a"))
    a.classList.toggle("current", a.id === "nav-" + name);
  if (loaders[name]) loaders[name]();
}
function every(name, ms, load) {
  // One load of a view at a time: a slow cluster makes the page wait, never pile requests up.
  let busy = false;
  const once = async () => {
    if (busy) return;
    busy = true;
    try { await load(); } finally { busy = false; }
  };
  loaders[name] = once;
  setInterval(() => { if (current() === name && !document.hidden) once(); }, ms);
}
function prefixBox(name, onChange) {
  const input = el("input", {id: name + "-prefix", placeholder: "prefix, e.g. team/",
                             value: localStorage.getItem(name + "-prefix") || ""});
  input.addEventListener("change", () => {
    localStorage.setItem(name + "-prefix", input.value);
    onChange();
  });
  return input;
}

// ------------------------------------------------------------------------------ live views
function liveViews() {
  let period = 1000;
  const status = el("div");
  fill("replicas", el("h2", {text: "Replicas"}), status);
  async function loadStatus() {
    try {
      const view = await getJSON("/api/cluster");
      period = Math.max(1000, view.poll_period_s * 1000);
      const leader = el("span", {id: "leader", cls: "leader", text: view.leader || "none"});
      document.getElementById("headline").replaceChildren("leader: ", leader);
      const rows = view.replicas.map((r) => ({
        tr: el("tr", {"data-endpoint": r.endpoint, "data-up": String(r.up),
                      "data-role": r.up ? r.role : "down"}),
        cells: [el("span", {cls: r.leader ? "leader mono" : "mono", text: r.endpoint}),
                el("span", {cls: r.up ? "up" : "down", text: r.up ? "up" : "down"}),
                r.up ? r.role : "-", r.term, r.commit_index, r.applied_index, r.lag,
                r.revision, r.keys, el("span", {cls: "mono", text: (r.digest || "").slice(0, 16)}),
                r.up ? (r.has_quorum ? "yes" : "no") : el("span", {cls: "error", text: r.error})],
      }));
      status.replaceChildren(
        el("p", {cls: "note", text: "Polled every " + period / 1000 + " s (last: " +
                 new Date(view.polled_at * 1000).toLocaleTimeString() + "). Lag: entries " +
                 "between the highest commit index and the replica's applied index."}),
        table(["replica", "state", "role", "term", "commit", "applied", "lag", "revision",
               "keys", "digest", "quorum / error"], rows, [3, 4, 5, 6, 7, 8]));
    } catch (err) {
      document.getElementById("headline").textContent = "dashboard unreachable: " + err.message;
    }
    setTimeout(loadStatus, period);
  }
  loaders.replicas = () => {};
  loadStatus();

  const keysOut = el("div");
  const keysPrefix = prefixBox("keys", () => loaders.keys());
  fill("keys", el("h2", {text: "Keys"}), el("div", {cls: "controls"}, keysPrefix), keysOut);
  every("keys", REFRESH_MS, async () => {
    try {
      const view = await getJSON("/api/keys?prefix=" + encodeURIComponent(keysPrefix.value));
      const rows = view.keys.map((k) => ({
        tr: el("tr", {"data-key": k.key}),
        cells: [el("span", {cls: "mono", text: k.key}), k.version, k.author, k.lease,
                k.mod_revision, el("span", {cls: "mono value", text: k.value})]}));
      keysOut.replaceChildren(
        el("p", {cls: view.error ? "error" : "note", text: view.error ||
                 view.keys.length + " keys at revision " + view.revision +
                 (view.truncated ? " (cut: narrow the prefix)" : "")}),
        table(["key", "version", "author", "lease", "revision", "value"], rows, [1, 3, 4]));
    } catch (err) { keysOut.replaceChildren(el("p", {cls: "error", text: err.message})); }
  });

  const claimsOut = el("div");
  const claimsPrefix = prefixBox("claims", () => loaders.claims());
  fill("claims", el("h2", {text: "Claims"}), el("div", {cls: "controls"}, claimsPrefix),
       claimsOut);
  every("claims", REFRESH_MS, async () => {
    try {
      const [claims, leases] = await Promise.all([
        getJSON("/api/claims?prefix=" + encodeURIComponent(claimsPrefix.value)),
        getJSON("/api/leases")]);
      const claimRows = claims.claims.map((c) => ({
        tr: el("tr", {"data-claim": c.key}),
        cells: [el("span", {cls: "mono", text: c.key}), c.owner, c.fence, c.lease, c.ttl,
                fmt(c.time_left_s, 1)]}));
      const leaseRows = leases.leases.map((l) => ({
        tr: el("tr", {"data-lease": String(l.id)}),
        cells: [l.id, l.owner, l.ttl, fmt(l.time_left_s, 1), l.refreshes, l.keys,
                l.claims.join(", ")]}));
      claimsOut.replaceChildren(
        claims.error ? el("p", {cls: "error", text: claims.error}) : "",
        table(["key", "owner", "fence", "lease", "ttl s", "left s"], claimRows, [2, 3, 4, 5]),
        el("h3", {text: "Leases"}),
        el("p", {cls: "note", text: "Time left as the leader counts it: the leader expires a " +
                 "lease when it runs out without a keepalive (a new leader restarts the count)."}),
        leases.error ? el("p", {cls: "error", text: leases.error}) : "",
        table(["lease", "owner", "ttl s", "left s", "keepalives", "keys", "claims"], leaseRows,
              [0, 2, 3, 4, 5]));
    } catch (err) { claimsOut.replaceChildren(el("p", {cls: "error", text: err.message})); }
  });

  const policiesOut = el("div");
  fill("policies", el("h2", {text: "Policy bindings"}), policiesOut);
  every("policies", 3 * REFRESH_MS, async () => {
    try {
      const view = await getJSON("/api/policies");
      const rows = view.policies.map((p) => ({
        tr: el("tr", {"data-prefix": p.prefix}),
        cells: [el("span", {cls: "mono", text: p.prefix || "(every key)"}), p.name,
                el("span", {cls: "mono", text: p.params})]}));
      policiesOut.replaceChildren(
        el("p", {cls: view.error ? "error" : "note", text: view.error || "The longest bound " +
                 "prefix of a key decides; a key under none is under reject-stale."}),
        table(["prefix", "policy", "parameters"], rows));
    } catch (err) { policiesOut.replaceChildren(el("p", {cls: "error", text: err.message})); }
  });

  // One stream for the page's whole life (a new prefix replaces it).
  const state = el("span", {id: "stream-state", cls: "badge retrying", text: "connecting"});
  const eventsBody = el("tbody", {id: "events"});
  const eventsPrefix = prefixBox("events", () => openStream(false));
  fill("events", el("h2", {text: "Live events "}, state),
       el("div", {cls: "controls"}, eventsPrefix),
       el("p", {cls: "note", text: "Committed changes, newest first, as they commit (one " +
                "watch, resumed on another replica when its replica fails)."}),
       el("table", {}, el("thead", {}, el("tr", {}, ...["revision", "kind", "key", "version",
          "author", "cause", "value"].map((h) => el("th", {text: h})))), eventsBody));
  let source = null;
  let lastId = "";
  const seen = new Set();
  function openStream(resume) {
    if (source) source.close();
    if (!resume) {
      seen.clear();
      eventsBody.replaceChildren();
      lastId = "";
    }
    source = new EventSource("/api/events?prefix=" + encodeURIComponent(eventsPrefix.value) +
                             (lastId ? "&after=" + encodeURIComponent(lastId) : ""));
    source.onopen = () => { state.textContent = "live"; state.className = "badge live"; };
    source.onerror = () => {
      state.textContent = "reconnecting"; state.className = "badge retrying";
      // The browser retries a dropped stream by itself, but not a refused one.
      if (source.readyState === EventSource.CLOSED) setTimeout(() => openStream(true), 5000);
    };
    source.addEventListener("notice", (message) => {
      const notice = JSON.parse(message.data);
      state.textContent = notice.kind; state.className = "badge retrying";
    });
    source.addEventListener("board", (message) => {
      const ev = JSON.parse(message.data);
      lastId = message.lastEventId;
      const id = ev.revision + "|" + ev.key;
      if (seen.has(id)) return;
      seen.add(id);
      if (seen.size > SEEN_MAX) seen.delete(seen.values().next().value);
      state.textContent = "live"; state.className = "badge live";
      const row = el("tr", {"data-key": ev.key, "data-revision": String(ev.revision)},
        el("td", {cls: "num", text: String(ev.revision)}), el("td", {text: ev.kind}),
        el("td", {cls: "mono", text: ev.key}), el("td", {cls: "num", text: String(ev.version)}),
        el("td", {text: ev.author}), el("td", {text: ev.cause}),
        el("td", {cls: "mono value", text: ev.value}));
      eventsBody.prepend(row);
      while (eventsBody.childElementCount > EVENTS_SHOWN_MAX) eventsBody.lastElementChild.remove();
    });
  }
  loaders.events = () => {};
  openStream(false);
}

// ------------------------------------------------------------------------------- run views
async function chaosView() {
  try {
    const v = await getJSON("/api/chaos");
    document.getElementById("headline").replaceChildren(
      "verdict: ", el("span", {id: "verdict", cls: "badge " + v.verdict, text: v.verdict}));
    const windows = v.windows.map((w) => ({cells: [w.label, fmt(w.start_s, 2) + "-" +
      fmt(w.end_s, 2), w.invoked, w.ok, w.fail, w.info, w.ok_per_s, w.gap_max_s,
      w.availability, w.latency_p50_ms, w.latency_p99_ms, w.recover_s, w.error]}));
    const findings = v.findings.map((f) => ({cells: [f.check, f.verdict, f.detail]}));
    fill("chaos",
      el("h2", {text: "Chaos run: "}, el("span", {cls: "badge " + v.verdict, text: v.verdict})),
      el("p", {cls: "note", text: "linearizable: " + v.linearizable + "; converged: " +
               v.converged + "; operations checked: " + v.operations + "; faults injected: " +
               v.faults_injected + (v.duration_s === null ? "" : "; " + v.duration_s + " s")}),
      ...v.problems.map((p) => el("p", {cls: "error", text: "problem: " + p})),
      el("h3", {text: "Timeline"}),
      v.timeline ? el("img", {id: "timeline", cls: "plot", src: v.timeline,
                              alt: "timeline of the run"})
                 : el("p", {cls: "note", text: "no timeline in this folder"}),
      el("h3", {text: "Figures per fault"}),
      table(["window", "span s", "invoked", "ok", "fail", "info", "ok/s", "longest gap s",
             "availability", "p50 ms", "p99 ms", "recover s", "error"], windows,
            [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
      el("h3", {text: "Checks"}), table(["check", "verdict", "detail"], findings),
      el("pre", {text: v.explanation}));
  } catch (err) { fill("chaos", el("p", {cls: "error", text: err.message})); }
}

async function experimentView() {
  try {
    const v = await getJSON("/api/experiment");
    document.getElementById("headline").textContent = v.title;
    const placed = new Set();
    const nodes = v.blocks.map((b) => {
      if (b.kind === "heading") return el("h" + Math.min(4, b.level + 1), {text: b.text});
      if (b.kind === "text") return el("p", {text: b.text});
      if (b.kind === "plot") {
        placed.add(b.src);
        return el("img", {cls: "plot", src: b.src, alt: b.text});
      }
      const [head, ...rows] = b.rows;
      return el("div", {cls: "wide"}, table(head || [], rows.map((r) => ({cells: r}))));
    });
    const rest = v.plots.filter((src) => !placed.has(src));
    if (rest.length) nodes.push(el("h3", {text: "Other plots"}),
                                ...rest.map((src) => el("img", {cls: "plot", src, alt: src})));
    fill("experiment", ...nodes);
  } catch (err) { fill("experiment", el("p", {cls: "error", text: err.message})); }
}

window.addEventListener("hashchange", show);
if (KIND === "live") liveViews();
if (KIND === "chaos") loaders.chaos = chaosView;
if (KIND === "experiment") loaders.experiment = experimentView;
show();
"""
