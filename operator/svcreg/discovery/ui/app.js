// svcreg's read-only dashboard. It calls the same /v1 routes as any client, with the viewer's
// token in an Authorization header, so it shows exactly what that identity may list.
//
// Contracts kept here:
// - the token lives in this tab's sessionStorage and in request headers, never in a URL;
// - everything a registration carries is tenant-written, so it is only ever set as text
//   (textContent), never parsed as HTML;
// - the live view is /v1/watch read as a stream (fetch, so the token rides in a header, which
//   EventSource cannot do); a reset event or a reconnect lists again.
"use strict";

const TOKEN_KEY = "svcreg.token";
const TIMELINE_LIMIT = 500;
const FILTERS = ["service", "namespace", "capability", "tag", "version", "health"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  filters: { health: "any" },
  items: new Map(), // "namespace/name" -> registration
  timeline: [],
  watchGeneration: 0,
  watchAbort: null,
};

class ApiError extends Error {
  constructor(status, message, parameter) {
    super(message);
    this.status = status;
    this.parameter = parameter;
  }
}

function $(selector) {
  return document.querySelector(selector);
}

// An element with text children only: strings become text nodes, never markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "data") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function url(path, params) {
  const target = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.append(key, value);
  }
  return target;
}

async function api(path, params) {
  const response = await fetch(url(path, params), { headers: headers(), cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.message || response.statusText, error.parameter);
  }
  return body;
}

function showMessage(text) {
  $("#message").textContent = text || "";
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("signed out: " + error.message);
    return;
  }
  const where = error.parameter ? " (parameter " + error.parameter + ")" : "";
  showMessage(error.message + where);
}

// --- signing in -------------------------------------------------------------------------------

function identityOf(token) {
  // For display only: the token's subject when it is a JWT. The server decides what it may see.
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || "signed in";
  } catch (_) {
    return "signed in";
  }
}

async function start() {
  try {
    const stats = await api("/v1/stats");
    $("#sign-in").classList.add("hidden");
    $("#app").classList.remove("hidden");
    $("#sign-out").classList.toggle("hidden", !state.token);
    $("#who").textContent = state.token ? identityOf(state.token) : "signed in by svcreg ui";
    $("#summary").textContent = stats.total + " registrations you may list";
    await refresh();
    watch();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(state.token ? "the token was refused: " + error.message : "");
    } else {
      signOut("discovery answered: " + error.message);
    }
  }
}

function signOut(reason) {
  state.watchGeneration += 1;
  if (state.watchAbort) state.watchAbort.abort();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.items.clear();
  $("#app").classList.add("hidden");
  $("#sign-out").classList.add("hidden");
  $("#sign-in").classList.remove("hidden");
  $("#who").textContent = "";
  $("#token").value = "";
  $("#sign-in-error").textContent = reason || "";
  setLive("off", "not watching");
}

// --- services and the live view -----------------------------------------------------------------

function key(item) {
  return item.namespace + "/" + item.name;
}

function endpointOf(item) {
  if (item.endpoint) return item.endpoint;
  return (item.instances || []).map((a) => a.address + ":" + a.port + " " + a.health).join(", ");
}

function healthCell(health) {
  return el("td", { class: "health health-" + health, data: { health } }, health);
}

function renderServices() {
  const body = $("#services tbody");
  const items = [...state.items.values()].sort(
    (a, b) =>
      a.service.localeCompare(b.service) ||
      a.namespace.localeCompare(b.namespace) ||
      a.name.localeCompare(b.name),
  );
  const rows = [];
  let service = null;
  for (const item of items) {
    if (item.service !== service) {
      service = item.service;
      const count = items.filter((i) => i.service === service).length;
      const healthy = items.filter((i) => i.service === service && i.health === "Healthy").length;
      rows.push(
        el("tr", { class: "group" }, el("td", { colspan: "10" }, service + " — " + healthy + "/" + count + " healthy")),
      );
    }
    rows.push(
      el(
        "tr",
        { data: { key: key(item) }, class: "instance" },
        el("td", {}, item.displayName ? item.service + " (" + item.displayName + ")" : item.service),
        el("td", {}, item.namespace),
        el("td", { class: "name" }, item.name),
        el("td", {}, item.version || ""),
        el("td", {}, endpointOf(item)),
        healthCell(item.health),
        el("td", {}, String(item.weight)),
        el("td", {}, (item.tags || []).join(", ")),
        el("td", {}, (item.capabilities || []).map((c) => (c.version ? c.name + "@" + c.version : c.name)).join(", ")),
        el(
          "td",
          {},
          el("button", { type: "button", class: "explain", onclick: () => explainOne(item) }, "explain"),
          " ",
          el("button", { type: "button", class: "consumers", onclick: () => consumersOf(item.service) }, "consumers"),
        ),
      ),
    );
  }
  body.replaceChildren(...rows);
  $("#summary").textContent = items.length + " registrations match (you see only what you may list)";
}

async function refresh() {
  showMessage("");
  const answer = await api("/v1/services", state.filters);
  state.items = new Map(answer.items.map((item) => [key(item), item]));
  renderServices();
  const capabilities = await api("/v1/capabilities", { namespace: state.filters.namespace });
  renderCapabilities(capabilities);
}

function setLive(stateName, text) {
  const live = $("#live");
  live.dataset.state = stateName;
  live.textContent = text;
}

function record(event) {
  const registration = event.registration;
  if (!registration) return;
  const id = key(registration);
  if (event.type === "deleted") state.items.delete(id);
  else state.items.set(id, registration);
  if (event.previousHealth && event.previousHealth !== registration.health) {
    state.timeline.unshift({
      at: new Date(),
      namespace: registration.namespace,
      name: registration.name,
      service: registration.service,
      from: event.previousHealth,
      to: event.type === "deleted" ? registration.health + " (out of this view)" : registration.health,
    });
    state.timeline.length = Math.min(state.timeline.length, TIMELINE_LIMIT);
    renderTimeline();
  }
}

function parseEvent(block) {
  const event = { name: "message", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.name = value;
    else if (field === "data") event.data += value;
  }
  return event.data ? event : null;
}

async function watch() {
  state.watchGeneration += 1;
  const generation = state.watchGeneration;
  if (state.watchAbort) state.watchAbort.abort();
  let backoff = 1000;
  while (generation === state.watchGeneration) {
    const abort = new AbortController();
    state.watchAbort = abort;
    try {
      const response = await fetch(url("/v1/watch", state.filters), { headers: headers(), signal: abort.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(response.status, (body.error && body.error.message) || response.statusText);
      }
      setLive("live", "live");
      backoff = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!event) continue;
          if (event.name === "reset") await refresh();
          else {
            record(JSON.parse(event.data));
            renderServices();
          }
        }
      }
    } catch (error) {
      if (abort.signal.aborted || generation !== state.watchGeneration) return;
      if (error instanceof ApiError && error.status === 401) {
        signOut("signed out: " + error.message);
        return;
      }
      setLive("error", "watch: " + error.message);
    }
    if (generation !== state.watchGeneration) return;
    setLive("error", "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 30000);
  }
}

// --- the other tabs -----------------------------------------------------------------------------

function counts(byHealth) {
  return Object.entries(byHealth)
    .map(([health, count]) => health + " " + count)
    .join(", ");
}

function renderCapabilities(answer) {
  $("#capabilities tbody").replaceChildren(
    ...answer.capabilities.map((c) =>
      el(
        "tr",
        {},
        el("td", {}, el("button", { type: "button", onclick: () => filterBy({ capability: c.name }) }, c.name)),
        el("td", {}, c.versions.join(", ")),
        el("td", {}, counts(c.instances)),
        el("td", {}, String(c.total)),
      ),
    ),
  );
}

function renderTimeline() {
  $("#timeline tbody").replaceChildren(
    ...state.timeline.map((t) =>
      el(
        "tr",
        { class: "transition" },
        el("td", {}, t.at.toLocaleTimeString()),
        el("td", {}, t.namespace),
        el("td", {}, t.name),
        el("td", {}, t.service),
        healthCell(t.from),
        healthCell(t.to),
      ),
    ),
  );
}

function probeText(probes) {
  if (!probes || probes.length === 0) return "";
  return probes
    .map((p) => (p.passed ? "passed" : "failed") + " " + p.reason + " (" + p.latencyMs.toFixed(1) + " ms, " + p.at + ") " + p.message)
    .join("; ");
}

async function runExplain() {
  showMessage("");
  try {
    const params = { ...state.filters };
    const answer = await api("/v1/explain", params);
    $("#explain-summary").textContent =
      answer.count + " candidates, " + answer.included + " in the answer";
    $("#explain tbody").replaceChildren(
      ...answer.candidates.map((c) =>
        el(
          "tr",
          { data: { key: c.namespace + "/" + c.name }, class: c.included ? "included" : "excluded" },
          el("td", {}, c.namespace),
          el("td", {}, c.name),
          el("td", {}, c.service),
          healthCell(c.health),
          el("td", {}, c.included ? "yes" : "no"),
          el("td", { class: "reasons" }, c.reasons.join("; ")),
          el("td", {}, c.notes.join("; ")),
          el("td", {}, probeText(c.lastProbes)),
        ),
      ),
    );
  } catch (error) {
    failed(error);
  }
}

async function showConsumers(kind, name) {
  showMessage("");
  $("#consumers-summary").textContent = "";
  try {
    const answer = await api("/v1/consumers", { [kind]: name });
    $("#consumers-summary").textContent =
      answer.consumers.length + " identities asked for " + kind + " " + name + " in the last " + answer.windowSeconds + " s (this replica)";
    $("#consumers tbody").replaceChildren(
      ...answer.consumers.map((c) =>
        el("tr", {}, el("td", {}, c.identity), el("td", {}, String(c.requests)), el("td", {}, c.firstSeen), el("td", {}, c.lastSeen)),
      ),
    );
  } catch (error) {
    $("#consumers tbody").replaceChildren();
    failed(error);
  }
}

function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll(".tab")) {
    section.classList.toggle("hidden", section.id !== "tab-" + name);
  }
}

function readFilters() {
  const form = $("#filters");
  const filters = {};
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) filters[name] = value;
  }
  return filters;
}

function writeFilters(filters) {
  const form = $("#filters");
  for (const name of FILTERS) form.elements[name].value = filters[name] ?? (name === "health" ? "any" : "");
}

async function applyFilters(filters) {
  state.filters = filters;
  try {
    await refresh();
    watch();
  } catch (error) {
    failed(error);
  }
}

function filterBy(filters) {
  writeFilters({ health: "any", ...filters });
  showTab("services");
  applyFilters(readFilters());
}

// Why is this instance (not) in what a client gets? The default query, narrowed to its service.
function explainOne(item) {
  writeFilters({ health: "", service: item.service, namespace: item.namespace });
  state.filters = readFilters();
  showTab("explain");
  runExplain();
}

function consumersOf(service) {
  const form = $("#consumers-form");
  form.elements.kind.value = "service";
  form.elements.name.value = service;
  showTab("consumers");
  showConsumers("service", service);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) {
      $("#sign-in-error").textContent = "paste a token first";
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    start();
  });
  $("#sign-out").addEventListener("click", () => signOut("signed out"));
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters(readFilters());
  });
  $("#run-explain").addEventListener("click", runExplain);
  $("#consumers-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    showConsumers(form.elements.kind.value, form.elements.name.value.trim());
  });
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  start();
});
