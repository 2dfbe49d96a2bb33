// The inferplex admin console. Every change goes through the admin REST API; data is
// written into the page with textContent only (never innerHTML), so tenant text stays text.
"use strict";

const KEY = "inferplex.adminKey";
const REFRESH_MS = 5000;
let current = null;      // the view shown
let timer = null;
const charts = {};       // uPlot instances by element id

// ---- helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(table, head, rows) {
  table.replaceChildren(el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
                        el("tbody", {}, rows));
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function num(v, digits = 2) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; }
function ago(s) { return s === null || s === undefined ? "never" : `${num(s, 1)} s ago`; }
function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

function tenantColour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return `hsl(${h}, 55%, 45%)`;
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = !text;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  if (r.status !== 204) data = await r.json().catch(() => null);
  if (r.status === 401 || r.status === 403) {
    signOut((data && data.error) || "this key is not an admin key");
    throw new Error("signed out");
  }
  if (!r.ok) {
    const message = (data && data.error) || `${method} ${path} answered ${r.status}`;
    showError(message);
    throw new Error(message);
  }
  return data;
}

// ---- sign-in and routing ------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  document.getElementById("nav").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  document.getElementById("sign-in").hidden = false;
  showError(message || "");
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    await api("GET", "/admin/console/history");
  } catch (e) {
    return;
  }
  showError("");
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  route();
}

function route() {
  if (!sessionStorage.getItem(KEY)) return;
  const name = (location.hash || "#overview").slice(1);
  const view = VIEWS[name] ? name : "overview";
  current = view;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${view}`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view);
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  const view = current;
  try {
    await VIEWS[view]();
    document.body.dataset.rendered = view;  // tests wait on this
  } catch (e) {
    if (e.message === "signed out") return;
  }
  if (view === current && sessionStorage.getItem(KEY)) timer = setTimeout(refresh, REFRESH_MS);
}

// ---- overview -----------------------------------------------------------------------

function chart(id, series, data, y) {
  const node = document.getElementById(id);
  const width = Math.max(node.clientWidth, 300);
  if (!charts[id]) {
    charts[id] = new uPlot({
      width, height: 200,
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))],
      axes: [{}, { size: 64 }],
      scales: { y: y || {} },
    }, data, node);
    node.dataset.points = String(data[0].length);
    return;
  }
  charts[id].setData(data);
  node.dataset.points = String(data[0].length);
}

async function overview() {
  const [history, instances, leader, replicas] = await Promise.all([
    api("GET", "/admin/console/history"), api("GET", "/admin/instances"), api("GET", "/admin/leader"),
    api("GET", "/admin/console/replicas")]);
  const pts = history.points;
  const t = pts.map((p) => p.at);
  const o = pts.map((p) => p.overall);
  const last = o.length ? o[o.length - 1] : null;
  const refused = last ? Object.values(last.refusals_per_s).reduce((a, b) => a + b, 0) : null;
  document.getElementById("cards").replaceChildren(
    ...[["requests/s", last && num(last.requests_per_s)], ["goodput/s", last && num(last.goodput_per_s)],
        ["SLO attainment", last && pct(last.slo_attainment)], ["refusals/s", refused === null ? null : num(refused)],
        ["p99", last && last.p99_ms !== null ? `${num(last.p99_ms, 1)} ms` : null],
        ["instances", `${instances.filter((i) => i.healthy).length} / ${instances.length} healthy`]]
      .map(([label, value]) => el("div", { class: "card" }, el("div", { class: "muted" }, label),
                                  el("div", { class: "value" }, value === null ? "–" : value))));
  const rel = (v) => (v === null || v === undefined ? null : v);
  chart("chart-rate", [["requests/s", "#2f6fde"], ["goodput/s", "#2a8a4a"]],
        [t, o.map((r) => r.requests_per_s), o.map((r) => r.goodput_per_s)]);
  chart("chart-slo", [["attainment %", "#2a8a4a"]],
        [t, o.map((r) => (r.slo_attainment === null ? null : r.slo_attainment * 100))], { range: [0, 100] });
  const reasons = ["quota", "infeasible", "queue_full", "dropped"];
  const colours = ["#b7791f", "#c23b3b", "#7d4fc2", "#555"];
  chart("chart-refusals", reasons.map((r, i) => [r, colours[i]]),
        [t, ...reasons.map((r) => o.map((x) => x.refusals_per_s[r] || 0))]);
  chart("chart-p99", [["p99 ms", "#2f6fde"], ["SLO ms", "#c23b3b"]],
        [t, o.map((r) => rel(r.p99_ms)), o.map((r) => rel(r.slo_ms))], { distr: 3, log: 10 });
  fill(document.getElementById("overview-instances"), ["instance", "class", "health", "memory"],
       instances.map((i) => el("tr", {}, el("td", {}, i.instance_id), el("td", {}, i.instance_class),
                               el("td", {}, health(i)), el("td", {}, `${bytes(i.used_bytes)} / ${bytes(i.memory_bytes)}`))));
  fill(document.getElementById("overview-replicas"), ["replica", "role", "last seen"],
       replicas.replicas.map((r) => el("tr", { data: { replica: r.replica } }, el("td", {}, r.replica),
         el("td", {}, r.leader ? el("span", { class: "badge good" }, "placement leader") : "replica",
            r.this ? el("span", { class: "badge" }, "this one: its history is charted") : null),
         el("td", {}, r.last_seen_s_ago === null ? "–" : ago(r.last_seen_s_ago)))));
  document.getElementById("overview-history").textContent =
    `${pts.length} points of ${leader.replica}'s counters, one every ${history.interval_s} s (the last ` +
    `${Math.round(history.window_s / 60)} min are kept); reconcile passes here: ${leader.reconcile.passes}; ` +
    `leader: ${replicas.leader || "none"}`;
}

function health(i) {
  return [el("span", { class: `badge ${i.healthy ? "good" : "bad"}` }, i.healthy ? "healthy" : "unhealthy"),
          i.draining ? el("span", { class: "badge warn" }, "draining") : null];
}

// ---- instances ----------------------------------------------------------------------

async function instances() {
  const [list, placement] = await Promise.all([api("GET", "/admin/instances"), api("GET", "/admin/placement")]);
  const placed = Object.fromEntries(placement.instances.map((p) => [p.instance_id, p]));
  const box = document.getElementById("instances");
  box.replaceChildren(...list.map((inst) => {
    const p = placed[inst.instance_id] || { models: [], cache: null };
    const budget = Math.max(inst.memory_bytes, 1);
    const inFlight = p.models.reduce((a, m) => a + m.in_flight, 0);
    const bar = el("div", { class: "bar", data: { budget: inst.memory_bytes, used: inst.used_bytes } },
      p.models.map((m) => {
        const seg = el("div", { class: `segment${m.state === "loading" ? " loading" : ""}`,
                                title: `${m.model}: ${bytes(m.bytes)}`,
                                data: { model: m.model, tenant: m.tenant, bytes: m.bytes } }, m.model);
        seg.style.width = `${(100 * m.bytes) / budget}%`;
        seg.style.backgroundColor = tenantColour(m.tenant);
        return seg;
      }));
    const drain = `/admin/instances/${encodeURIComponent(inst.instance_id)}/drain`;
    const actions = el("span", { class: "actions" },
      inst.draining
        ? el("button", { class: "secondary", type: "button", data: { action: "undrain" },
                         on: { click: () => act("DELETE", drain, `Put ${inst.instance_id} back in service?`) } },
             "Put back")
        : el("button", { class: "secondary", type: "button", data: { action: "drain" },
                         on: { click: () => act("POST", drain,
                                                 `Drain ${inst.instance_id}? Its models move to other instances.`) } },
             "Drain"),
      el("button", { class: "danger", type: "button", data: { action: "remove" },
                     on: { click: () => act("DELETE", `/admin/instances/${encodeURIComponent(inst.instance_id)}`,
                                             `Remove ${inst.instance_id}? The control plane forgets it.`) } },
         "Remove"));
    const table = el("table", {});
    fill(table, ["model", "tenant", "state", "memory", "rate/s", "in flight", "last use"],
         p.models.map((m) => el("tr", {},
           el("td", {}, el("span", { class: "legend-swatch", data: { tenant: m.tenant } }), m.model),
           el("td", {}, m.tenant), el("td", {}, m.state), el("td", { class: "num" }, bytes(m.bytes)),
           el("td", { class: "num" }, num(m.rate_per_s)), el("td", { class: "num" }, String(m.in_flight)),
           el("td", {}, ago(m.last_used_s_ago)))));
    for (const sw of table.querySelectorAll(".legend-swatch")) sw.style.backgroundColor = tenantColour(sw.dataset.tenant);
    const cache = p.cache ? `local artifact cache ${bytes(p.cache.used_bytes)} / ${bytes(p.cache.budget_bytes)}` +
                            ` (${p.cache.entries ?? 0} entries, ${p.cache.hits ?? 0} hits, ${p.cache.misses ?? 0} misses)`
                          : "no local artifact cache (e.g. NVIDIA Triton)";
    const cacheBar = el("div", { class: "bar thin", data: { cacheBudget: p.cache ? p.cache.budget_bytes : 0,
                                                             cacheUsed: p.cache ? p.cache.used_bytes : 0 } });
    if (p.cache && p.cache.budget_bytes) {
      const fillCache = el("div", { class: "segment cache" });
      fillCache.style.width = `${(100 * p.cache.used_bytes) / p.cache.budget_bytes}%`;
      cacheBar.append(fillCache);
    }
    return el("div", { class: "panel instance", data: { instance: inst.instance_id } },
      el("h2", {}, inst.instance_id, health(inst), actions),
      el("div", { class: "muted" }, `${inst.kind} · class ${inst.instance_class} · ${inFlight} requests in flight here · ` +
         `used ${bytes(inst.used_bytes)} of ${bytes(inst.memory_bytes)}` +
         (inst.reported_used_bytes !== null ? ` (instance reports ${bytes(inst.reported_used_bytes)})` : "")),
      bar, el("div", { class: "muted" }, cache), p.cache ? cacheBar : null, table);
  }));
}

async function act(method, path, question) {
  if (!window.confirm(question)) return;
  await api(method, path).catch(() => null);
  refresh();
}

// ---- tenants ------------------------------------------------------------------------

const POLICY = ["weight", "rate_per_s", "burst", "max_concurrent", "service_class", "memory_share", "memory_share_bytes"];
let editing = null;  // the tenant row being edited

async function tenants() {
  const table = await api("GET", "/admin/console/tenants");
  fill(document.getElementById("tenants"),
       ["tenant", "display name", "class", "weight", "rate / burst", "max conc.", "memory share", "memory held",
        "keys", "req/s", "SLO att.", "refusals/s", ""],
       table.tenants.map((t) => {
         const refusals = t.recent ? Object.values(t.recent.refusals_per_s).reduce((a, b) => a + b, 0) : null;
         const share = t.memory_share_bytes !== null ? bytes(t.memory_share_bytes)
                     : t.memory_share !== null ? pct(t.memory_share) : "–";
         return el("tr", { data: { tenant: t.name } },
           el("td", {}, t.name), el("td", { class: "display-name" }, t.display_name),
           el("td", {}, t.service_class), el("td", { class: "num" }, num(t.weight)),
           el("td", { class: "num" }, `${t.rate_per_s === null ? "–" : num(t.rate_per_s)} / ${t.burst ?? "–"}`),
           el("td", { class: "num" }, t.max_concurrent ?? "–"), el("td", {}, share),
           el("td", { class: "num" }, bytes(t.memory_used_bytes)),
           el("td", { class: "keys" }, t.key_ids.map((k) => el("div", {}, el("code", {}, k), " ",
             el("button", { class: "danger", type: "button", data: { revoke: k },
                            on: { click: () => act("DELETE", `/admin/keys/${encodeURIComponent(k)}`, `Revoke key ${k}?`) } },
                "revoke")))),
           el("td", { class: "num" }, t.recent ? num(t.recent.requests_per_s) : "–"),
           el("td", { class: "num" }, t.recent ? pct(t.recent.slo_attainment) : "–"),
           el("td", { class: "num" }, refusals === null ? "–" : num(refusals)),
           el("td", {},
              el("button", { class: "secondary", type: "button", data: { action: "edit" }, on: { click: () => edit(t) } }, "Edit"),
              " ",
              el("button", { type: "button", data: { action: "issue-key" }, on: { click: () => issueKey(t.name) } }, "Issue key")));
       }));
}

function edit(t) {
  editing = t;
  const form = document.getElementById("edit-tenant");
  document.getElementById("edit-tenant-name").textContent = t.name;
  for (const field of POLICY) form.elements[field].value = t[field] === null ? "" : String(t[field]);
  form.hidden = false;
}

async function saveEdit(ev) {
  ev.preventDefault();
  const form = ev.target;
  const body = {};
  for (const field of POLICY) {
    const raw = form.elements[field].value.trim();
    const before = editing[field];
    if (field === "service_class") { if (raw !== before) body[field] = raw; continue; }
    const value = raw === "" ? null : (["burst", "max_concurrent", "memory_share_bytes"].includes(field) ? parseInt(raw, 10) : Number(raw));
    if (value !== before) body[field] = value;
  }
  if (Object.keys(body).length) {
    await api("PATCH", `/admin/tenants/${encodeURIComponent(editing.name)}`, body).catch(() => null);
  }
  form.hidden = true;
  editing = null;
  refresh();
}

async function issueKey(tenant) {
  const issued = await api("POST", `/admin/tenants/${encodeURIComponent(tenant)}/keys`, {}).catch(() => null);
  if (!issued) return;
  document.getElementById("new-key-tenant").textContent = tenant;
  document.getElementById("new-key-secret").textContent = issued.key;
  document.getElementById("new-key").hidden = false;
  refresh();
}

async function createTenant(ev) {
  ev.preventDefault();
  const form = ev.target;
  const body = { name: form.elements.name.value.trim(), display_name: form.elements.display_name.value };
  const made = await api("POST", "/admin/tenants", body).catch(() => null);
  if (made) { form.reset(); showError(""); }
  refresh();
}

// ---- models -------------------------------------------------------------------------

async function models() {
  const select = document.getElementById("models-tenant");
  const chosen = select.value;
  const [table, names] = await Promise.all([
    api("GET", `/admin/console/models${chosen ? `?tenant=${encodeURIComponent(chosen)}` : ""}`),
    api("GET", "/admin/tenants")]);
  select.replaceChildren(el("option", { value: "" }, "every tenant"),
    ...names.tenants.map((t) => el("option", { value: t.name, selected: t.name === chosen }, t.name)));
  fill(document.getElementById("models"),
       ["tenant", "model", "version", "platform", "status", "SLO", "execute p50 by batch", "load cold / warm", "copies"],
       table.models.map((m) => el("tr", { data: { model: `${m.tenant}/${m.name}` } },
         el("td", {}, m.tenant), el("td", {}, m.name), el("td", { class: "num" }, String(m.version)),
         el("td", {}, m.platform),
         el("td", {}, el("span", { class: `badge ${m.status === "ready" ? "good" : m.status === "failed" ? "bad" : "warn"}` }, m.status),
            m.reason ? el("div", { class: "muted reason" }, m.reason) : null),
         el("td", { class: "num" }, `${num(m.slo_ms, 0)} ms`),
         el("td", {}, m.profile.length ? m.profile.map((c) => el("div", {}, `${c.instance_class}: `,
            Object.entries(c.exec_p50_ms).map(([b, ms]) => `b${b} ${num(ms, 2)} ms`).join(" · ") || "–")) : "not profiled"),
         el("td", {}, m.profile.map((c) => el("div", {}, `${c.instance_class}: ${c.load_cold_p50_ms === null ? "–" : num(c.load_cold_p50_ms, 0)} / ` +
            `${c.load_warm_p50_ms === null ? "–" : num(c.load_warm_p50_ms, 0)} ms`))),
         el("td", {}, m.copies.length ? m.copies.map((c) => el("div", {}, c.instance_id, c.state === "loading" ? " (loading)" : "")) : "none"))));
}

// ---- decisions ----------------------------------------------------------------------

async function decisions() {
  const form = document.getElementById("decisions-filter");
  const params = new URLSearchParams();
  for (const f of ["tenant", "model"]) if (form.elements[f].value.trim()) params.set(f, form.elements[f].value.trim());
  const list = await api("GET", `/admin/console/decisions${params.size ? `?${params}` : ""}`);
  fill(document.getElementById("decisions"), ["time", "source", "kind", "models", "what and why"],
       list.events.map((e) => el("tr", { class: `kind-${e.kind}`, data: { kind: e.kind, source: e.source } },
         el("td", {}, clock(e.at)), el("td", {}, e.source), el("td", {}, e.kind),
         el("td", {}, e.models.map((m) => el("div", {}, m))), el("td", {}, e.text))));
}

const VIEWS = { overview, instances, tenants, models, decisions };

// ---- wiring -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("admin-key");
    signIn(input.value.trim());
    input.value = "";
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  document.getElementById("create-tenant").addEventListener("submit", createTenant);
  document.getElementById("edit-tenant").addEventListener("submit", saveEdit);
  document.getElementById("edit-cancel").addEventListener("click", () => { document.getElementById("edit-tenant").hidden = true; });
  document.getElementById("new-key-done").addEventListener("click", () => {
    document.getElementById("new-key-secret").textContent = "";
    document.getElementById("new-key").hidden = true;
  });
  document.getElementById("models-tenant").addEventListener("change", refresh);
  document.getElementById("decisions-filter").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
});
