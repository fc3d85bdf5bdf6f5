// Switchyard's dashboard: reads the REST API every second and renders it;
// every button is one call of the same API, whose error is shown as it words it.
//
// Nothing from the API is ever parsed as HTML: the page is built with
// createElement and textContent only (the Content-Security-Policy allows no
// inline script either).
"use strict";

(function () {
  const POLL_MS = 1000;
  const REQUEST_TIMEOUT_MS = 5000;
  const TOKEN_KEY = "switchyard.api-token";
  const STATES = ["active", "standby", "draining", "disabled"];

  const $ = (id) => document.getElementById(id);
  let lastConfig = null;
  let lastReplicas = [];

  // ---- The API -------------------------------------------------------------

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  // One call: resolves to {ok, status, body} (body: the parsed JSON or null),
  // or {ok: false, status: 0, error} when the control plane cannot be reached.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const auth = token();
    if (auth) headers.Authorization = "Bearer " + auth;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal: abort.signal,
      });
      const text = await response.text();
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch (_) {
        parsed = null;
      }
      const result = { ok: response.ok, status: response.status, body: parsed };
      if (!response.ok) {
        // The API's own words; anything else (a proxy's page) as its status.
        result.error =
          parsed && typeof parsed.error === "string"
            ? parsed.error
            : "HTTP " + response.status + " " + response.statusText + (text ? ": " + text.slice(0, 200) : "");
      }
      return result;
    } catch (e) {
      const why = e && e.name === "AbortError" ? "no answer within 5 s" : String(e && e.message ? e.message : e);
      return { ok: false, status: 0, error: "cannot reach the control plane: " + why };
    } finally {
      clearTimeout(timer);
    }
  }

  const seg = encodeURIComponent;

  // ---- DOM helpers (text only) ---------------------------------------------

  // el("td", {className: "x", dataset: {k: "v"}}, "text", childNode, ...)
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === "dataset") Object.assign(node.dataset, value);
        else if (key === "className") node.className = value;
        else if (key in node) node[key] = value;
        else if (value !== false) node.setAttribute(key, String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const dash = "–";
  const text = (v) => (v === null || v === undefined || v === "" ? dash : String(v));

  // Re-rendering every second must not take what a person is typing away:
  // inputs with a data-key keep their value (once edited) and the focus.
  function preserving(root, render) {
    const edited = new Map();
    for (const input of root.querySelectorAll("[data-key]")) {
      if (input.dataset.edited === "1") edited.set(input.dataset.key, input.value);
    }
    const active = document.activeElement;
    const focusKey = active && root.contains(active) && active.dataset ? active.dataset.key : undefined;
    let selection = null;
    if (focusKey && typeof active.selectionStart === "number") {
      selection = [active.selectionStart, active.selectionEnd];
    }
    render();
    for (const input of root.querySelectorAll("[data-key]")) {
      if (edited.has(input.dataset.key)) {
        input.value = edited.get(input.dataset.key);
        input.dataset.edited = "1";
      }
      if (focusKey && input.dataset.key === focusKey) {
        input.focus();
        if (selection && typeof input.setSelectionRange === "function") {
          try {
            input.setSelectionRange(selection[0], selection[1]);
          } catch (_) {
            // Not every input type has a selection.
          }
        }
      }
    }
  }

  document.addEventListener("input", (event) => {
    const target = event.target;
    if (target && target.dataset && target.dataset.key) target.dataset.edited = "1";
  });

  // Drops the edits of the inputs whose key `matches` (after a write that
  // took them), emptying them too when `clear`.
  function forgetEdits(matches, clear) {
    for (const input of document.querySelectorAll("[data-key]")) {
      if (!matches(input.dataset.key)) continue;
      delete input.dataset.edited;
      if (clear) input.value = input.tagName === "SELECT" ? input.options[0].value : "";
    }
  }

  // ---- Messages --------------------------------------------------------------

  function say(kind, label, message) {
    const box = $("message");
    box.className = "banner " + kind;
    $("message-label").textContent = label;
    $("message-text").textContent = message;
    box.hidden = false;
  }

  // An action's answer: the API's error as it words it, or what was done.
  function report(what, result, done) {
    if (result.ok) {
      const version = result.body && typeof result.body.version === "number" ? " (version " + result.body.version + ")" : "";
      say("ok", "Done", done + version);
    } else {
      const label = result.status ? what + " refused (HTTP " + result.status + ")" : what + " failed";
      say("error", label, result.error);
    }
  }

  // ---- Rendering ---------------------------------------------------------------

  function badge(value, kind) {
    return el("span", { className: "badge " + (kind || value) }, text(value));
  }

  function number(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : dash;
  }

  function percent(value) {
    return typeof value === "number" && isFinite(value) ? (value * 100).toFixed(1) + " %" : dash;
  }

  // How each connected replica sees one member: [replica, its entry or undefined].
  function sightings(cluster, member) {
    return lastReplicas
      .filter((r) => r.connected)
      .map((r) => [r, (r.members || []).find((m) => m.cluster === cluster && m.member_id === member)]);
  }

  function healthCell(seen) {
    if (seen.length === 0) return el("td", { className: "per-replica" }, el("span", { className: "muted" }, "no replica"));
    return el(
      "td",
      { className: "per-replica" },
      seen.map(([replica, entry]) => {
        let state = "unknown";
        let detail = "this replica has not reported this member";
        if (entry) {
          state = entry.ejected ? "ejected" : entry.healthy ? "healthy" : "unhealthy";
          detail = entry.detail || state;
          if (entry.ejected && entry.ejection_reason) detail += " (" + entry.ejection_reason + ")";
        }
        return el("div", { className: "line", title: detail }, el("span", { className: "node" }, replica.node_id), " ", badge(state));
      })
    );
  }

  function rateCell(seen, field, format) {
    return el(
      "td",
      { className: "per-replica num" },
      seen.map(([, entry]) => el("div", { className: "line" }, format(entry ? entry[field] : undefined)))
    );
  }

  function memberRow(cluster, member) {
    const name = cluster.name;
    const id = member.id;
    const seen = sightings(name, id);
    const key = name + "/" + id;
    const action = (act, label, disabled) =>
      el("button", { type: "button", className: act === "remove" ? "danger" : "", dataset: { action: act }, disabled }, label);
    return el(
      "tr",
      { dataset: { cluster: name, member: id } },
      el("td", { className: "mono" }, id),
      el("td", { className: "mono" }, member.url),
      el(
        "td",
        { className: "weight" },
        el(
          "form",
          { className: "weight-form", dataset: { cluster: name, member: id } },
          el("input", {
            className: "weight-input",
            name: "weight",
            inputMode: "numeric",
            size: 3,
            value: String(member.weight),
            "aria-label": "weight of " + id,
            dataset: { key: "weight:" + key },
          }),
          el("button", { type: "submit", className: "small" }, "Set")
        )
      ),
      el("td", { className: "state" }, badge(member.state || "active")),
      healthCell(seen),
      rateCell(seen, "requests_per_second", (v) => number(v, 1)),
      rateCell(seen, "error_rate", percent),
      el(
        "td",
        { className: "actions" },
        action("drain", "Drain", member.state === "draining"),
        action("disable", "Disable", member.state === "disabled"),
        action("enable", "Enable", (member.state || "active") === "active"),
        action("remove", "Remove")
      )
    );
  }

  function addMemberForm(cluster) {
    const key = (field) => ({ key: "add:" + cluster.name + ":" + field });
    return el(
      "form",
      { className: "inline-form add-member", dataset: { cluster: cluster.name } },
      el("span", { className: "form-title" }, "Add a member"),
      el("input", { name: "url", placeholder: "http://host:port", spellcheck: false, dataset: key("url"), "aria-label": "member url" }),
      el("input", { name: "id", placeholder: "id (host:port)", spellcheck: false, dataset: key("id"), "aria-label": "member id" }),
      el("input", { name: "weight", placeholder: "weight (1)", inputMode: "numeric", size: 8, dataset: key("weight"), "aria-label": "member weight" }),
      el(
        "select",
        { name: "state", dataset: key("state"), "aria-label": "member state" },
        STATES.map((s) => el("option", { value: s }, s))
      ),
      el("button", { type: "submit" }, "Add member")
    );
  }

  function clusterCard(cluster) {
    const members = cluster.members || [];
    const facts = [cluster.policy || "round_robin", cluster.protocol || "http1"];
    if (cluster.health_check) facts.push("health check " + (cluster.health_check.path || "/"));
    return el(
      "article",
      { className: "card", dataset: { cluster: cluster.name } },
      el(
        "header",
        null,
        el("h3", null, cluster.name),
        facts.map((f) => el("span", { className: "pill" }, f)),
        el("span", { className: "count" }, members.length + (members.length === 1 ? " member" : " members"))
      ),
      el(
        "table",
        { className: "grid members" },
        el(
          "thead",
          null,
          el(
            "tr",
            null,
            ["Member", "URL", "Weight", "State", "Health (per replica)"].map((h) => el("th", null, h)),
            el("th", { className: "num", title: "Requests per second, as each replica counts them" }, "Req/s"),
            el("th", { className: "num", title: "Share of attempts that failed or got a 5xx" }, "Errors"),
            el("th", { className: "actions" })
          )
        ),
        el(
          "tbody",
          null,
          members.length
            ? members.map((m) => memberRow(cluster, m))
            : el("tr", null, el("td", { colSpan: 8, className: "empty" }, "No member yet."))
        )
      ),
      addMemberForm(cluster)
    );
  }

  function renderClusters(config) {
    const root = $("clusters");
    preserving(root, () => {
      const clusters = config.clusters || [];
      root.replaceChildren(
        ...(clusters.length ? clusters.map(clusterCard) : [el("p", { className: "empty" }, "No cluster yet.")])
      );
    });
  }

  function renderRoutes(config) {
    const routes = config.routes || [];
    $("routes").tBodies[0].replaceChildren(
      ...(routes.length
        ? routes.map((r) =>
            el(
              "tr",
              { dataset: { route: r.name } },
              el("td", { className: "mono" }, r.name),
              el("td", { className: "mono" }, r.host ? r.host : el("span", { className: "muted" }, "any")),
              el("td", { className: "mono" }, r.path_prefix),
              el("td", { className: "mono" }, r.cluster),
              el("td", { className: "mono" }, text(r.rewrite_prefix)),
              el(
                "td",
                { className: "actions" },
                el("button", { type: "button", dataset: { action: "edit-route" } }, "Edit"),
                el("button", { type: "button", className: "danger", dataset: { action: "remove-route" } }, "Remove")
              )
            )
          )
        : [el("tr", null, el("td", { colSpan: 6, className: "empty" }, "No route yet."))])
    );
    // The form's cluster list follows the config; the choice stays.
    const select = $("route-cluster");
    const chosen = select.value;
    const names = (config.clusters || []).map((c) => c.name);
    const current = Array.from(select.options).map((o) => o.value);
    if (names.join("\n") !== current.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (names.includes(chosen)) select.value = chosen;
    }
  }

  function ago(stamp) {
    const at = Date.parse(stamp || "");
    if (!isFinite(at)) return dash;
    const seconds = Math.max(0, Math.round((Date.now() - at) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    return Math.floor(seconds / 3600) + " h ago";
  }

  function renderReplicas(config, replicas) {
    const rows = replicas.map((r) => {
      const members = r.members || [];
      const healthy = members.filter((m) => m.healthy).length;
      let reason = dash;
      if (r.state === "nacked") {
        reason = (r.nacked_version ? "v" + r.nacked_version + ": " : "") + text(r.last_error);
      }
      return el(
        "tr",
        { dataset: { node: r.node_id, state: r.state, version: String(r.version) } },
        el("td", { className: "mono" }, r.node_id),
        el("td", null, badge(r.state)),
        el("td", { className: "num" }, "v" + r.version, config && r.version !== config.version ? el("span", { className: "muted" }, " of v" + config.version) : null),
        el("td", { className: "reason" }, reason),
        el("td", { className: "mono" }, text(r.peer)),
        el("td", { title: text(r.last_seen) }, ago(r.last_seen)),
        el("td", { className: "num" }, members.length ? healthy + " / " + members.length : dash)
      );
    });
    $("replicas").tBodies[0].replaceChildren(
      ...(rows.length ? rows : [el("tr", null, el("td", { colSpan: 7, className: "empty" }, "No replica has connected."))])
    );
  }

  // ---- Polling -----------------------------------------------------------------

  // One read at a time: an action asks for a read now, which waits for the
  // one in flight (if any) instead of starting a second loop.
  let timer = null;
  let reading = false;
  let readAgain = false;

  async function refresh() {
    const [config, replicas] = await Promise.all([api("GET", "/api/v1/config"), api("GET", "/api/v1/dataplanes")]);
    const failed = [config, replicas].find((r) => !r.ok);
    const banner = $("read-error");
    if (failed) {
      banner.textContent = "";
      banner.append(
        el("span", { className: "label" }, failed.status ? "Reading the API refused (HTTP " + failed.status + ")" : "Reading the API failed"),
        " ",
        el("span", { className: "text" }, failed.error)
      );
      banner.hidden = false;
      $("live").textContent = lastConfig ? "not updated since " + new Date().toLocaleTimeString() : "no data";
      $("live").className = "live stale";
      return;
    }
    banner.hidden = true;
    lastConfig = config.body || {};
    lastReplicas = Array.isArray(replicas.body) ? replicas.body : [];
    const store = typeof lastConfig.store_id === "string" ? lastConfig.store_id.slice(0, 8) : dash;
    $("cp-version").textContent = "control plane at version " + text(lastConfig.version) + " · store " + store;
    renderClusters(lastConfig);
    renderRoutes(lastConfig);
    renderReplicas(lastConfig, lastReplicas);
    $("live").textContent = "live · " + new Date().toLocaleTimeString();
    $("live").className = "live ok";
  }

  function poll() {
    clearTimeout(timer);
    timer = null;
    if (reading) {
      readAgain = true;
      return;
    }
    reading = true;
    refresh()
      .catch((error) => console.error("dashboard: drawing the page failed", error))
      .finally(() => {
        reading = false;
        if (readAgain) {
          readAgain = false;
          poll();
        } else {
          timer = setTimeout(poll, POLL_MS);
        }
      });
  }

  // ---- Actions -------------------------------------------------------------------

  function memberPath(cluster, member) {
    return "/api/v1/clusters/" + seg(cluster) + "/members/" + seg(member);
  }

  // "5" is sent as 5; anything else as typed, for the API to say what is wrong.
  function numberOrText(value) {
    const trimmed = value.trim();
    return /^-?\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  async function memberAction(button) {
    const row = button.closest("tr[data-member]");
    if (!row) return;
    const cluster = row.dataset.cluster;
    const member = row.dataset.member;
    const act = button.dataset.action;
    let result;
    let done;
    if (act === "remove") {
      if (!window.confirm("Remove member " + member + " from cluster " + cluster + "?")) return;
      result = await api("DELETE", memberPath(cluster, member));
      done = "member " + member + " removed from cluster " + cluster;
    } else {
      const state = { drain: "draining", disable: "disabled", enable: "active" }[act];
      if (!state) return;
      result = await api("PATCH", memberPath(cluster, member), { state });
      done = "member " + member + " of cluster " + cluster + " is now " + state;
    }
    report(act.charAt(0).toUpperCase() + act.slice(1), result, done);
    poll();
  }

  async function setWeight(form) {
    const weight = numberOrText(form.elements.weight.value);
    const { cluster, member } = form.dataset;
    const result = await api("PATCH", memberPath(cluster, member), { weight });
    report("Weight", result, "member " + member + " of cluster " + cluster + " has weight " + weight);
    // The row may have been drawn again meanwhile: forget the edit on what is there now.
    if (result.ok) forgetEdits((key) => key === "weight:" + cluster + "/" + member, false);
    poll();
  }

  async function addMember(form) {
    const cluster = form.dataset.cluster;
    const field = (name) => form.elements[name].value.trim();
    const body = { url: field("url") };
    if (field("id")) body.id = field("id");
    if (field("weight")) body.weight = numberOrText(field("weight"));
    if (field("state") !== "active") body.state = field("state");
    const result = await api("POST", "/api/v1/clusters/" + seg(cluster) + "/members", body);
    const id = result.ok && result.body && result.body.id ? result.body.id : body.id || body.url;
    report("Add member", result, "member " + id + " added to cluster " + cluster);
    if (result.ok) forgetEdits((key) => key.startsWith("add:" + cluster + ":"), true);
    poll();
  }

  async function saveRoute(form) {
    const value = (id) => $(id).value.trim();
    const name = value("route-name");
    // Replacing a route keeps what this form does not show (header rules, compression, …).
    const existing = lastConfig && (lastConfig.routes || []).find((r) => r.name === name);
    const route = Object.assign({}, existing || {}, {
      name,
      path_prefix: value("route-prefix"),
      cluster: value("route-cluster"),
      host: value("route-host") || null,
      rewrite_prefix: value("route-rewrite") || null,
    });
    const result = await api("PUT", "/api/v1/routes/" + seg(name), route);
    report(existing ? "Replace route" : "Create route", result, "route " + name + (existing ? " replaced" : " created"));
    poll();
  }

  function editRoute(button) {
    const row = button.closest("tr[data-route]");
    const route = row && lastConfig && (lastConfig.routes || []).find((r) => r.name === row.dataset.route);
    if (!route) return;
    $("route-name").value = route.name;
    $("route-host").value = route.host || "";
    $("route-prefix").value = route.path_prefix || "";
    $("route-cluster").value = route.cluster;
    $("route-rewrite").value = route.rewrite_prefix || "";
    $("route-name").focus();
  }

  async function removeRoute(button) {
    const row = button.closest("tr[data-route]");
    if (!row) return;
    const name = row.dataset.route;
    if (!window.confirm("Remove route " + name + "?")) return;
    const result = await api("DELETE", "/api/v1/routes/" + seg(name));
    report("Remove route", result, "route " + name + " removed");
    poll();
  }

  // ---- Wiring ----------------------------------------------------------------------

  function start() {
    $("token").value = token();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      try {
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) {
        // Storage refused (private mode): the token is not kept, say so.
        say("error", "Token", "this browser refused to keep the token in sessionStorage");
        return;
      }
      say("ok", "Token", value ? "the API token is sent with every request from this tab" : "no API token is sent");
      poll();
    });
    $("token-forget").addEventListener("click", () => {
      try {
        sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) {
        // Nothing was kept.
      }
      $("token").value = "";
      say("ok", "Token", "no API token is sent");
      poll();
    });
    $("message-close").addEventListener("click", () => {
      $("message").hidden = true;
    });

    $("clusters").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button) memberAction(button);
    });
    $("clusters").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.target;
      if (form.classList.contains("weight-form")) setWeight(form);
      else if (form.classList.contains("add-member")) addMember(form);
    });
    $("routes").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      if (button.dataset.action === "edit-route") editRoute(button);
      else if (button.dataset.action === "remove-route") removeRoute(button);
    });
    $("route-form").addEventListener("submit", (event) => {
      event.preventDefault();
      saveRoute(event.target);
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
