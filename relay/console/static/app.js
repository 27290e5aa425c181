// The operators' dashboard: plain JS, no build step. Every call carries the ops token
// kept in this tab's sessionStorage. The page reads the console (/api/dashboard: the
// gateway's newest /ops/status and the rates of the last minutes; /api/io) every 2 s;
// changes go to the gateway itself through /api/gateway/<path> (its /ops/<path>).
"use strict";

const TOKEN_KEY = "relay.console.opsToken";
const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const GROUPS = ["live", "degraded", "failed"];

let timer = null;
let refreshing = false;

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  if (response.status === 401) throw new Unauthorized(await detail(response));
  return response;
}

async function detail(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || JSON.stringify(body);
  } catch (e) {
    return "HTTP " + response.status;
  }
}

async function json(path) {
  const response = await api(path);
  if (!response.ok) return { error: await detail(response), status: response.status };
  return response.json();
}

// --- the token ------------------------------------------------------------------------

function showLogin(message) {
  if (timer) clearTimeout(timer);
  timer = null;
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(message);
}

async function signIn(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    const response = await api("/api/dashboard");
    if (!response.ok) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(await detail(response));
      return;
    }
    const session = await response.json();
    $("gateway").textContent = "gateway " + session.gateway_url;
  } catch (e) {
    signOut(e instanceof Unauthorized ? "The gateway refused this token: " + e.message : String(e));
    return;
  }
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  refresh();
}

// --- the refresh ------------------------------------------------------------------------

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  if (timer) clearTimeout(timer);
  try {
    const [dashboard, io] = await Promise.all([json("/api/dashboard"), json("/api/io")]);
    if (dashboard.error) {
      $("problem").textContent = "console: " + dashboard.error;
    } else {
      const history = dashboard.history;
      $("problem").textContent = history.poll_error || "";
      if (dashboard.status) render(dashboard.status, history, io);
      if (dashboard.status_at)
        $("updated").textContent =
          "gateway read at " + new Date(dashboard.status_at * 1000).toLocaleTimeString();
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      refreshing = false;
      signOut("The gateway refused the token (expired?): " + e.message);
      return;
    }
    $("problem").textContent = "console: " + e;
  }
  refreshing = false;
  timer = setTimeout(refresh, REFRESH_MS);
}

function render(status, history, io) {
  const rates = latestRates(history);
  renderModules(status, rates);
  renderCharts(history);
  renderLevers(status.levers);
  renderFaults(status.faults || []);
  renderShedding(status, history);
  renderIO(io);
  renderKV($("releases"), status.releases, "No release running.", releaseLine);
  renderKV($("regions"), status.regions, "One region (no peers).");
  renderDeferred(status.deferred);
}

// Each unit's rates averaged over the newest intervals (about 10 s): one 2 s interval alone
// is mostly noise.
const RATE_INTERVALS = 5;

function latestRates(history) {
  const recent = ((history && history.series) || []).slice(-RATE_INTERVALS);
  const out = {};
  for (const s of recent) {
    for (const [unit, rates] of Object.entries(s.rates)) {
      const row = (out[unit] = out[unit] || {});
      for (const g of GROUPS) row[g] = (row[g] || 0) + (rates[g] || 0) / recent.length;
    }
  }
  return out;
}

// --- modules ------------------------------------------------------------------------

function versionOf(status, unit, view) {
  if (view.version) return view.version;
  const releases = status.releases || {};
  const release = releases[unit] || releases[view.module || unit.split("/")[0]];
  if (!release) return "";
  if (release.phase === "running")
    return `${release.stable_version} → ${release.canary_version} @ ${release.weight}%`;
  return release.phase === "promoted" ? release.canary_version : release.stable_version;
}

function renderModules(status, rates) {
  const body = $("modules").tBodies[0];
  const region = status.regions ? status.regions.region : "";
  const rows = Object.entries(status.modules || {}).map(([unit, view]) => {
    const state = (view.breaker && view.breaker.state) || "unknown";
    const rate = rates[unit] || {};
    const bulkhead = view.bulkhead || {};
    const peer = unit.includes(":") ? unit.split(":")[0] : "";
    return el(
      "tr",
      { "data-unit": unit, "data-breaker": state },
      el("td", {}, unit),
      el("td", {}, view.tier || ""),
      el("td", {}, view.cell || ""),
      el("td", {}, peer || region || ""),
      el("td", {}, versionOf(status, unit, view)),
      el("td", {}, el("span", { class: "breaker " + state, "data-state": state }, state)),
      el("td", { class: "num" }, `${bulkhead.in_flight ?? "-"} / ${bulkhead.max_concurrent ?? "-"}`),
      ...GROUPS.map((g) => el("td", { class: "num " + g }, fmt(rate[g]))),
    );
  });
  body.replaceChildren(...rows);
}

function fmt(value) {
  if (value === undefined || value === null) return "-";
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

// --- charts: one stacked area per unit ------------------------------------------------

function renderCharts(history) {
  const box = $("charts");
  const series = history.series || [];
  const windowS = history.window_seconds || 600;
  $("window").textContent = Math.round(windowS / 60);
  $("rates-source").textContent =
    history.source === "metrics-summary"
      ? `From /ops/metrics/summary (instances: ${(history.instances || []).join(", ")}).`
      : history.source === "status"
        ? "From /ops/status (breaker calls, fallbacks served, unavailable): this gateway has no metrics summary."
        : "No samples yet.";
  const now = history.now;
  // The window's seconds, or (a stack up for less) the seconds there are, a minute at least.
  const span = series.length ? Math.min(windowS, Math.max(60, now - series[0].at)) : windowS;
  const charts = (history.units || []).map((unit) => chart(unit, series, now, span));
  box.replaceChildren(...charts);
}

function chart(unit, series, now, windowS) {
  const W = 360;
  const H = 100;
  const points = series.map((s) => ({ at: s.at, r: s.rates[unit] || {} }));
  const max = Math.max(
    1,
    ...points.map((p) => GROUPS.reduce((sum, g) => sum + (p.r[g] || 0), 0)),
  );
  const x = (at) => W - ((now - at) / windowS) * W;
  const y = (v) => H - (v / max) * (H - 12);
  const figure = el("figure", { class: "chart", "data-unit": unit });
  figure.append(el("figcaption", {}, unit));
  const area = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  area.append(svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
  const label = svg("text", { x: 4, y: 10 });
  label.textContent = `${fmt(max)}/s`;
  const since = svg("text", { x: 4, y: H - 4 });
  since.textContent = `-${Math.round(windowS)} s`;
  area.append(label, since);
  if (points.length) {
    let base = points.map(() => 0);
    for (const g of GROUPS) {
      const top = points.map((p, i) => base[i] + (p.r[g] || 0));
      if (top.some((v, i) => v > base[i])) {
        const upper = points.map((p, i) => `${x(p.at).toFixed(1)},${y(top[i]).toFixed(1)}`);
        const lower = points
          .map((p, i) => `${x(p.at).toFixed(1)},${y(base[i]).toFixed(1)}`)
          .reverse();
        area.append(svg("path", { class: g, d: `M${upper.join("L")}L${lower.join("L")}Z` }));
      }
      base = top;
    }
  }
  // the breaker's state along the top: red while open, orange while half-open
  series.forEach((s, i) => {
    const state = (s.breakers || {})[unit];
    if (i === 0 || (state !== "open" && state !== "half-open")) return;
    const x0 = Math.max(0, x(series[i - 1].at));
    area.append(svg("rect", { class: "band " + state, x: x0, y: 0, width: Math.max(1, x(s.at) - x0), height: 4 }));
  });
  figure.append(area);
  return figure;
}

// --- levers ---------------------------------------------------------------------------

function expiresIn(item) {
  const left = item.expires_in_seconds;
  return left === undefined || left === null ? null : Math.round(left);
}

// /ops/status's levers: {"<type>:<target>": {who, why, expires_in_seconds}}
function renderLevers(inForce) {
  const list = $("levers");
  if (inForce === undefined) {
    list.replaceChildren(el("li", { class: "none" }, "This gateway shows no levers in /ops/status."));
    return;
  }
  const levers = Object.entries(inForce).map(([id, lever]) => ({
    lever_id: id,
    type: id.slice(0, id.indexOf(":")),
    target: id.slice(id.indexOf(":") + 1),
    ...lever,
  }));
  if (!levers.length) {
    list.replaceChildren(el("li", { class: "none" }, "No lever pulled."));
    return;
  }
  list.replaceChildren(
    ...levers.map((lever) => {
      const id = lever.lever_id;
      const left = expiresIn(lever);
      const release = el("button", { type: "button", class: "release" }, "Release");
      release.addEventListener("click", () => releaseLever(id));
      return el(
        "li",
        { "data-lever-id": id },
        el("span", { class: "what" }, `${lever.type} ${lever.target}`),
        el("span", { class: "muted" }, `by ${lever.who || lever.set_by || "?"}: ${lever.why || lever.reason || ""}`),
        el("span", { class: "muted" }, left === null ? "until released" : `expires in ${left} s`),
        release,
      );
    }),
  );
}

async function pullLever(event) {
  event.preventDefault();
  const body = {
    type: $("lever-type").value,
    target: $("lever-target").value.trim(),
    reason: $("lever-reason").value.trim(),
    ttl_seconds: Number($("lever-ttl").value),
  };
  $("lever-error").textContent = "";
  try {
    const response = await api("/api/gateway/levers", { method: "POST", body });
    if (!response.ok) {
      $("lever-error").textContent = `Not pulled (${response.status}): ${await detail(response)}`;
      return;
    }
    $("lever-reason").value = "";
  } catch (e) {
    if (e instanceof Unauthorized) return signOut("The gateway refused the token: " + e.message);
    $("lever-error").textContent = String(e);
    return;
  }
  refresh();
}

async function releaseLever(id) {
  $("lever-error").textContent = "";
  try {
    const response = await api("/api/gateway/levers/" + encodeURIComponent(id), {
      method: "DELETE",
      body: { reason: "released from the dashboard" },
    });
    if (!response.ok && response.status !== 404) {
      $("lever-error").textContent = `Not released (${response.status}): ${await detail(response)}`;
      return;
    }
  } catch (e) {
    if (e instanceof Unauthorized) return signOut("The gateway refused the token: " + e.message);
    $("lever-error").textContent = String(e);
    return;
  }
  refresh();
}

// --- faults, shedding, releases, regions, deferred -------------------------------------

function renderFaults(faults) {
  const list = $("faults");
  if (!faults.length) {
    list.replaceChildren(el("li", { class: "none" }, "No fault injected."));
    return;
  }
  list.replaceChildren(
    ...faults.map((f) => {
      const spec = f.spec || {};
      const clear = el("button", { type: "button", class: "clear" }, "Clear");
      clear.addEventListener("click", async () => {
        try {
          await api("/api/gateway/faults/" + f.module, { method: "DELETE" });
        } catch (e) {
          if (e instanceof Unauthorized) return signOut(e.message);
        }
        refresh();
      });
      const what = spec.kind === "latency" ? `latency ${spec.latency_ms} ms` : spec.kind;
      return el(
        "li",
        { "data-fault": f.module },
        el("span", { class: "what" }, `${f.module}: ${what}`),
        el("span", { class: "muted" }, `by ${f.set_by}: ${spec.reason || ""}`),
        el("span", { class: "muted" }, `expires in ${Math.round(f.expires_in_seconds)} s`),
        clear,
      );
    }),
  );
}

function renderShedding(status, history) {
  const view = status.shedding;
  const latest = history.latest || {};
  if (!view) {
    const facts = {};
    if (latest.in_flight !== undefined && latest.in_flight !== null) facts["in flight"] = latest.in_flight;
    if (latest.shed && Object.keys(latest.shed).length) facts["shed (by tier)"] = latest.shed;
    renderKV($("shedding"), Object.keys(facts).length ? facts : null, "This gateway does not shed.");
    return;
  }
  const facts = {
    "in flight": `${view.in_flight ?? "-"} / ${view.max_in_flight ?? "-"}`,
    pressure: view.pressure,
    "shedding now": (view.shedding || []).join(", ") || "nothing",
    "forced by levers": (view.forced || []).join(", ") || "nothing",
    "shed so far": view.shed,
  };
  for (const [k, v] of Object.entries(view)) {
    if (!["in_flight", "max_in_flight", "pressure", "shedding", "forced", "shed"].includes(k)) facts[k] = v;
  }
  renderKV($("shedding"), facts, "Nothing shed.");
}

function text(value) {
  if (value === null || value === undefined) return "-";
  if (Array.isArray(value)) return value.map(text).join(", ");
  if (typeof value === "object") {
    const flat = Object.values(value).every((v) => v === null || typeof v !== "object");
    return flat
      ? Object.entries(value).map(([k, v]) => `${k} ${v}`).join(", ")
      : JSON.stringify(value);
  }
  return String(value);
}

function releaseLine(module, release) {
  if (!release || typeof release !== "object" || !release.phase) return null;
  return `${release.phase}: ${release.stable_version} → ${release.canary_version} at ${release.weight}%`;
}

function renderKV(box, data, empty, line) {
  if (!data || (typeof data === "object" && !Object.keys(data).length)) {
    box.replaceChildren(el("p", { class: "muted" }, empty));
    return;
  }
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of Object.entries(data)) {
    dl.append(el("dt", {}, k), el("dd", {}, (line && line(k, v)) || text(v)));
  }
  box.replaceChildren(dl);
}

function renderDeferred(deferred) {
  const facts = {};
  for (const [state, view] of Object.entries(deferred || {})) {
    facts[state] = view && typeof view === "object" ? (view.error || view.count) : view;
  }
  renderKV($("deferred"), facts, "No deferred writes.");
}

function renderIO(io) {
  const box = $("io");
  if (io.error || !io.available) {
    box.replaceChildren(el("p", { class: "muted" }, io.error || io.reason || "Not available."));
    return;
  }
  box.replaceChildren(
    ...io.pairs.map((pair) => {
      const values = pair.values.map((v) =>
        el("span", { "data-metric": v.metric }, `${v.label} `, el("b", {}, v.value ?? "-")),
      );
      const [first, second] = pair.values;
      const gap =
        first && second && first.value !== null && second.value !== null && first.value > second.value
          ? el("span", { class: "gap" }, `gap ${first.value - second.value}`)
          : null;
      return el("div", { class: "io-pair" }, el("div", {}, pair.title), el("div", { class: "bar" }, ...values, gap));
    }),
    ...(io.delays || []).map((d) =>
      el(
        "div",
        { class: "io-pair", "data-metric": d.metric },
        el("div", {}, d.metric.replace(/^relay_/, "").replace(/_/g, " ")),
        el("div", { class: "bar muted" },
          `p50 ${secs(d.p50)}, p90 ${secs(d.p90)}, max ${secs(d.max)} (${d.count} observed)`),
      ),
    ),
  );
}

function secs(value) {
  return value === undefined || value === null ? "-" : `${value.toFixed(1)} s`;
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = $("token").value.trim();
    $("token").value = "";
    if (candidate) signIn(candidate);
  });
  $("sign-out").addEventListener("click", () => signOut("Token forgotten."));
  $("lever-form").addEventListener("submit", pullLever);
  const saved = token();
  if (saved) signIn(saved);
  else showLogin();
});
