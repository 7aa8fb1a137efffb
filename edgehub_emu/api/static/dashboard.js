// The edgehub-emu dashboard: one live stream of the hub's state (once a second), the route graph drawn
// by the hub, and the management API for twins, methods and injected messages. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const view = {
  token: sessionStorage.getItem("edgehub-emu-token"),
  device: null,
  hits: {},          // route -> hits at the previous update
  updatedAt: null,   // time of the previous update
  messages: [],      // newest last
  selected: null,    // module shown in the detail panel
  modules: [],
  traces: new Map(), // edgeMessageId -> trace text, for the traces open in the message list
};
const MAX_MESSAGES = 300;

async function api(method, path, body, headers = {}) {
  const options = { method, headers: { ...headers } };
  if (view.token) options.headers.Authorization = `Bearer ${view.token}`;
  if (body !== undefined) {
    if (typeof body === "string") {
      options.body = body;
    } else {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("the hub asks for its API token");
  }
  return response;
}

async function answer(response) {
  const text = await response.text();
  let value;
  try { value = JSON.parse(text); } catch { value = text; }
  if (!response.ok) {
    const message = value && value.error ? value.error.message : (value && value.message) || text;
    throw new Error(`${response.status}: ${message}`);
  }
  return value;
}

// --- the route graph -----------------------------------------------------------------------------

async function loadGraph() {
  try {
    const response = await api("GET", "/graph.svg");
    $("graph").innerHTML = await response.text();
  } catch (error) {
    $("graph").textContent = `the route graph could not be loaded: ${error.message}`;
  }
}

function edgeOf(route) {
  return document.querySelector(`#graph g.edge[data-route="${CSS.escape(route)}"]`);
}

function nodeOf(id) {
  return document.querySelector(`#graph g.node[data-node="${CSS.escape(id)}"]`);
}

function updateGraph(status, verdicts, seconds) {
  const lines = [];
  for (const route of status.routes) {
    const before = view.hits[route.name];
    const rate = before === undefined || !seconds ? 0 : Math.max(0, route.hits - before) / seconds;
    view.hits[route.name] = route.hits;
    const verdict = verdicts[route.name];
    const edge = edgeOf(route.name);
    if (edge) {
      const count = edge.querySelector("text.count");
      let text = `${route.hits} routed · ${rate.toFixed(1)}/s`;
      if (verdict && verdict.outcome !== "fired" && verdict.outcome !== "source_mismatch") {
        text += ` · last: ${verdict.outcome}`;
      }
      if (count) count.textContent = text;
      edge.classList.toggle("active", rate > 0);
      const unmatched = verdict && (verdict.outcome === "false" || verdict.outcome === "undefined");
      edge.classList.toggle("unmatched", !!unmatched);
      let title = edge.querySelector("title");
      if (!title) {
        title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        edge.prepend(title);
      }
      title.textContent = unmatched ? `last message: ${verdict.outcome}. ${verdict.reasons.join("; ")}` : route.route;
    }
    if (verdict && (verdict.outcome === "false" || verdict.outcome === "undefined")) {
      const why = verdict.reasons.length ? verdict.reasons.join("; ") : "its condition is false";
      lines.push(`<div>route <b>${escapeHtml(route.name)}</b>: the last message from its source came out <b>${verdict.outcome}</b> — <span class="why">${escapeHtml(why)}</span></div>`);
    }
  }
  $("verdicts").innerHTML = lines.join("");
  const depths = {};
  for (const queue of status.queues) {
    const node = queue.endpoint === "iothub" ? "$upstream" : queue.endpoint.split("/").slice(-2, -1)[0];
    (depths[node] = depths[node] || []).push(queue);
  }
  for (const element of document.querySelectorAll("#graph g.node")) {
    const queues = depths[element.dataset.node] || [];
    const total = queues.reduce((sum, q) => sum + q.messages, 0);
    const text = element.querySelector("text.depth");
    if (!text) continue;
    if (element.dataset.kind !== "module" && element.dataset.kind !== "upstream") continue;
    const parts = queues.map((q) => `p${q.priority}: ${q.messages}`).join(", ");
    text.textContent = total ? `queued ${total} (${parts})` : "queue empty";
  }
}

// --- modules -------------------------------------------------------------------------------------

function updateModules(status) {
  const local = Object.fromEntries((status.modules || []).map((m) => [m.name, m]));
  const queued = {};
  for (const queue of status.queues) {
    const parts = queue.endpoint.split("/");
    if (parts.length === 3) queued[parts[1]] = (queued[parts[1]] || 0) + queue.messages;
  }
  const rows = [];
  view.modules = [];
  for (const identity of status.identities) {
    if (identity.kind !== "module") continue;
    const name = identity.id.split("/")[1];
    if (name.startsWith("$")) continue;
    view.modules.push(name);
    const process = local[name];
    const processText = process ? `${process.runtimeStatus} (pid ${process.pid ?? "–"}, restarts ${process.restartCount})` : "–";
    rows.push(`<tr data-module="${escapeHtml(name)}">
      <td><b>${escapeHtml(name)}</b></td>
      <td class="${identity.connected ? "connected" : "disconnected"}">${identity.connected ? `connected over ${escapeHtml(identity.transport || "?")}` : "not connected"}</td>
      <td>${escapeHtml((identity.features || []).join(", ") || "–")}<br><small class="muted">${escapeHtml((identity.subscriptions || []).join(" "))}</small></td>
      <td>${escapeHtml(processText)}</td>
      <td>${queued[name] || 0}</td>
      <td><button type="button" data-open="${escapeHtml(name)}">twin &amp; methods</button></td>
    </tr>`);
  }
  $("module-rows").innerHTML = rows.join("");
  for (const button of document.querySelectorAll("#module-rows button[data-open]")) {
    button.addEventListener("click", () => openModule(button.dataset.open));
  }
  const select = $("inject-module");
  if (select.options.length !== view.modules.length) {
    select.innerHTML = view.modules.map((m) => `<option>${escapeHtml(m)}</option>`).join("");
  }
}

async function openModule(name) {
  view.selected = name;
  $("module-detail").hidden = false;
  $("detail-name").textContent = name;
  $("method-result").textContent = "";
  await showTwin();
}

function modulePath() {
  return `/twins/${encodeURIComponent(view.device)}/modules/${encodeURIComponent(view.selected)}`;
}

async function showTwin() {
  try {
    const twin = await answer(await api("GET", modulePath()));
    const props = twin.properties;
    const shown = {
      desired: props.desired,
      reported: props.reported,
    };
    $("twin").textContent = JSON.stringify(shown, null, 2);
  } catch (error) {
    $("twin").textContent = error.message;
  }
}

// --- messages ------------------------------------------------------------------------------------

function addMessages(messages) {
  if (!messages.length) return;
  view.messages.push(...messages);
  if (view.messages.length > MAX_MESSAGES) view.messages.splice(0, view.messages.length - MAX_MESSAGES);
  if (!$("pause").checked) renderMessages();
}

function bodyText(message) {
  const body = message.body;
  if (body.text === null || body.text === undefined) return `<${body.bytes} bytes, not UTF-8>`;
  const type = (message.systemProperties.contentType || "").toLowerCase();
  if (type.includes("json") || /^\s*[{[]/.test(body.text)) {
    try { return JSON.stringify(JSON.parse(body.text), null, 2); } catch { /* not JSON after all */ }
  }
  return body.text + (body.truncated ? " …" : "");
}

function renderMessages() {
  const filter = $("filter").value.trim().toLowerCase();
  const shown = [];
  for (let i = view.messages.length - 1; i >= 0 && shown.length < 100; i--) {
    const m = view.messages[i];
    const text = bodyText(m);
    const haystack = `${m.from} ${m.source} ${m.endpoints.join(" ")} ${text} ${JSON.stringify(m.properties)}`.toLowerCase();
    if (filter && !haystack.includes(filter)) continue;
    const to = m.endpoints.length ? m.endpoints.map((e) => (e === "iothub" ? "$upstream" : e)).join(", ") : "dropped: no route";
    shown.push(`<li data-id="${escapeHtml(m.edgeMessageId || "")}">
      <span class="meta">${escapeHtml(m.at.split("T")[1] || m.at)} from ${escapeHtml(m.from)} → </span><span class="to">${escapeHtml(to)}</span>
      <pre>${escapeHtml(text)}</pre>
      <details><summary>properties</summary><pre>${escapeHtml(JSON.stringify({ properties: m.properties, systemProperties: m.systemProperties }, null, 2))}</pre></details>
      <details class="trace" data-id="${escapeHtml(m.edgeMessageId || "")}"${view.traces.has(m.edgeMessageId) ? " open" : ""}><summary>trace: where did it go?</summary><pre class="trace-text">${escapeHtml(view.traces.get(m.edgeMessageId) || "")}</pre></details>
    </li>`);
  }
  $("message-list").innerHTML = shown.join("");
  for (const details of document.querySelectorAll("#message-list details.trace")) {
    details.addEventListener("toggle", () => {
      if (details.open && !view.traces.has(details.dataset.id)) showTrace(details);
      if (!details.open) view.traces.delete(details.dataset.id);
    });
  }
  $("message-count").textContent = `${view.messages.length} kept, ${shown.length} shown`;
}

async function showTrace(details) {
  // kept in view.traces: the list is drawn again each second, and an open trace stays open
  const id = details.dataset.id;
  view.traces.set(id, "tracing…");
  let text;
  try {
    const traced = await answer(await api("GET", `/trace?id=${encodeURIComponent(id)}`));
    text = traced.messages.length ? traceText(traced.messages[0]) : "no longer in the trace (it keeps the latest messages)";
  } catch (error) {
    text = error.message;
  }
  view.traces.set(id, text);
  for (const shown of document.querySelectorAll(`#message-list details.trace[data-id="${CSS.escape(id)}"] .trace-text`)) {
    shown.textContent = text;
  }
}

function traceText(m) {
  const outcome = { fired: "matched", false: "false", undefined: "undefined", source_mismatch: "not this source" };
  const lines = [`received ${m.received.at} from ${m.received.from}${m.received.output ? `, output ${m.received.output}` : ""}`];
  for (const r of m.routes || []) {
    lines.push(`  ${(outcome[r.outcome] || r.outcome).padEnd(16)}${r.name}`);
    for (const why of r.reasons) lines.push(`${" ".repeat(18)}${why}`);
  }
  if (m.dropped) lines.push(`dropped: ${m.dropped} (no route took it)`);
  for (const q of m.queued) {
    lines.push(`queued for ${q.endpoint === "iothub" ? "$upstream" : q.endpoint}, priority ${q.priority}, time-to-live ${q.timeToLiveSecs} s (route ${q.route}): ${q.state}`);
    for (const e of q.events) lines.push(`  ${e.at} ${e.event}`);
  }
  return lines.join("\n");
}

// --- the live stream -----------------------------------------------------------------------------

function apply(state) {
  const status = state.status;
  if (!view.device) {
    view.device = status.deviceId;
    $("device").textContent = `edge device ${status.deviceId}`;
  }
  const seconds = view.updatedAt ? state.time - view.updatedAt : 0;
  view.updatedAt = state.time;
  updateGraph(status, state.verdicts, seconds);
  updateModules(status);
  addMessages(state.messages);
  const m = status.messages;
  const delivered = Object.values(m.delivered || {}).reduce((a, b) => a + b, 0);
  const dropped = Object.values(m.dropped || {}).reduce((a, b) => a + b, 0);
  $("totals").textContent = `received ${m.received} · delivered ${delivered} · dropped ${dropped}`;
}

async function follow() {
  for (;;) {
    try {
      const response = await api("GET", "/dashboard/stream");
      if (!response.ok) throw new Error(`stream: ${response.status}`);
      setLive(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) apply(JSON.parse(data));
        }
      }
    } catch (error) {
      console.warn("dashboard stream:", error.message);
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await loadGraph(); // the deployment may have changed while we were away
  }
}

function setLive(on) {
  const badge = $("live");
  badge.textContent = on ? "live" : "reconnecting…";
  badge.className = `badge ${on ? "on" : "off"}`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// --- forms ---------------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  view.token = $("token").value;
  sessionStorage.setItem("edgehub-emu-token", view.token);
  $("token-form").hidden = true;
  loadGraph();
});

$("twin-refresh").addEventListener("click", showTwin);

$("desired-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const patch = JSON.parse($("desired").value);
    await answer(await api("PATCH", modulePath(), { properties: { desired: patch } }));
    await showTwin();
  } catch (error) {
    $("twin").textContent = `not applied: ${error.message}`;
  }
});

$("method-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("method-result");
  result.textContent = "calling…";
  try {
    const body = {
      methodName: $("method-name").value,
      payload: JSON.parse($("method-payload").value || "null"),
      responseTimeoutInSeconds: Number($("method-timeout").value) || 10,
    };
    const value = await answer(await api("POST", `${modulePath()}/methods`, body));
    result.textContent = JSON.stringify(value, null, 2);
    result.classList.remove("error");
  } catch (error) {
    result.textContent = error.message;
    result.classList.add("error");
  }
});

$("inject-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("inject-result");
  try {
    const module = $("inject-module").value;
    const input = $("inject-input").value;
    const headers = { "edgehub-properties": JSON.stringify(JSON.parse($("inject-properties").value || "{}")) };
    if ($("inject-json").checked) {
      headers["edgehub-system-properties"] = JSON.stringify({ contentType: "application/json", contentEncoding: "utf-8" });
    }
    headers["Content-Type"] = "application/octet-stream";
    const path = `/modules/${encodeURIComponent(module)}/inputs/${encodeURIComponent(input)}/messages`;
    const value = await answer(await api("POST", path, $("inject-body").value, headers));
    out.textContent = `queued for ${value.queued}`;
    out.classList.remove("error");
  } catch (error) {
    out.textContent = error.message;
    out.classList.add("error");
  }
});

$("filter").addEventListener("input", renderMessages);
$("pause").addEventListener("change", renderMessages);

loadGraph().then(follow);
