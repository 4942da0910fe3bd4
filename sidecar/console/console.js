// The tollgate console's script: fills the pages the sidecar serves from its
// data calls under /console/api. Every action sends the session's CSRF token
// (from <meta name="tollgate-csrf">) in x-csrf-token. Text from the server is
// set with textContent, never as markup. Plots are Chart.js (window.Chart,
// loaded before this script).
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="tollgate-csrf"]')?.content ?? "";
  const page = document.body.dataset.page;
  const REFRESH_MS = 5000;

  /** A call to the console's API; a 401 (session over) goes to the login page. */
  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") init.headers["x-csrf-token"] = csrf;
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (resp.status === 401 && data?.error?.code === "session_required") {
      location.assign("/console/login");
    }
    if (!resp.ok) {
      const err = new Error(data?.error?.message ?? `the sidecar answered ${resp.status}`);
      err.status = resp.status;
      err.field = data?.error?.field ?? null;
      err.code = data?.error?.code ?? null;
      throw err;
    }
    return data;
  }

  /** An element with text content and attributes. */
  function el(tag, text, attrs = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  function when(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  const number = new Intl.NumberFormat("en");

  // ---- limits: shown as the CLI spells them, changed through the admin API
  /** A quota as spelled: `tokens=100000/day@gpt-4o`. */
  function quotaText(q) {
    return `${q.kind}=${q.limit}/${q.window}${q.model ? `@${q.model}` : ""}`;
  }

  /** A key's limits as spelled, or "none". */
  function limitsText(limits) {
    const parts = [];
    if (limits?.rate) parts.push(`rate=${limits.rate.count}/${limits.rate.per}`, `burst=${limits.rate.burst}`);
    for (const q of limits?.quotas ?? []) parts.push(quotaText(q));
    return parts.length > 0 ? parts.join(" ") : "none";
  }

  /** The admin API's limit fields (`rate`, `burst`, `quotas`) from a form's inputs; empty ones are left out. */
  function limitFields(fields) {
    const out = { quotas: String(fields.get("quotas") ?? "").split(/[\s,]+/).filter((q) => q !== "") };
    const rate = String(fields.get("rate") ?? "").trim();
    const burst = String(fields.get("burst") ?? "").trim();
    if (rate) out.rate = rate;
    if (burst) out.burst = Number(burst);
    return out;
  }

  /** Why a call was refused, for the page: the API's message (which names the field). */
  function refusal(err) {
    return err.field ? `${err.message} (field: ${err.field})` : err.message;
  }

  /** What the limits dialog changes: a key's limits. */
  const keyLimits = (key) => ({ title: `${key.name} (${key.prefix}…)`, limits: key.limits, path: `/console/api/keys/${key.id}/limits` });

  /** What the limits dialog changes: a team's limits. */
  const teamLimits = (team) => ({ title: `team ${team.name}`, limits: team.limits, path: `/console/api/teams/${team.id}/limits` });

  /** The limits dialog for `target` (`keyLimits`, `teamLimits`); `saved` runs after a change was stored. */
  function editLimits(target, saved) {
    const dialog = document.getElementById("limits-dialog");
    const form = document.getElementById("limits-form");
    const error = document.getElementById("limits-error");
    const limits = target.limits;
    document.getElementById("limits-name").textContent = target.title;
    form.elements.rate.value = limits?.rate ? `${limits.rate.count}/${limits.rate.per}` : "";
    form.elements.burst.value = limits?.rate ? String(limits.rate.burst) : "";
    form.elements.quotas.value = (limits?.quotas ?? []).map(quotaText).join(" ");
    error.textContent = "";
    delete error.dataset.field;
    form.onsubmit = async (event) => {
      event.preventDefault();
      try {
        await api("PUT", target.path, limitFields(new FormData(form)));
        dialog.close();
        await saved();
      } catch (err) {
        error.textContent = `The limits were not changed: ${refusal(err)}`;
        error.dataset.field = err.field ?? "";
      }
    };
    document.getElementById("limits-cancel").onclick = () => dialog.close();
    dialog.showModal();
  }

  document.getElementById("logout")?.addEventListener("click", async () => {
    try { await api("POST", "/console/logout"); } finally { location.assign("/console/login"); }
  });

  // ---- the key list -------------------------------------------------------
  async function keysPage() {
    const tbody = document.querySelector("#keys tbody");
    const error = document.getElementById("keys-error");
    const dialog = document.getElementById("revoke-dialog");
    let revoking = null;

    const teamSelect = document.querySelector('#create-form select[name="team_id"]');
    let teamNames = new Map();

    async function load() {
      try {
        const [list, uses, teams] = await Promise.all([
          api("GET", "/console/api/keys"), api("GET", "/console/api/last-use"), api("GET", "/console/api/teams")]);
        const lastUse = new Map(uses.map((u) => [u.key_id, u.last_used_at]));
        teamNames = new Map(teams.teams.map((t) => [t.id, t.name]));
        fillTeamOptions(teamSelect, teams.teams);
        tbody.replaceChildren(...list.keys.map((key) => row(key, lastUse.get(key.id))));
        error.textContent = "";
      } catch (err) {
        error.textContent = `The key list could not be read: ${err.message}`;
      }
    }

    function row(key, lastUsed) {
      const tr = el("tr", null, { "data-key-id": String(key.id) });
      const link = el("a", key.name, { href: `/console/keys/${key.id}` });
      const name = el("td"); name.append(link);
      const prefix = el("td"); prefix.append(el("code", key.prefix));
      const status = el("td"); status.append(el("span", key.status, { class: `status ${key.status.toLowerCase()}` }));
      const actions = el("td", null, { class: "actions" });
      const change = el("button", "Limits", { type: "button", class: "edit-limits" });
      change.addEventListener("click", () => editLimits(keyLimits(key), load));
      actions.append(change);
      if (key.status !== "REVOKED") {
        const button = el("button", "Revoke", { type: "button", class: "danger" });
        button.addEventListener("click", () => {
          revoking = key;
          document.getElementById("revoke-name").textContent = `${key.name} (${key.prefix}…)`;
          dialog.showModal();
        });
        actions.append(button);
      }
      const limits = el("td", null, { class: "limits" });
      limits.append(el("code", limitsText(key.limits)));
      const team = el("td", null, { class: "team" });
      if (key.team_id !== null && key.team_id !== undefined) {
        team.append(el("a", teamNames.get(key.team_id) ?? `team ${key.team_id}`, { href: `/console/teams#team-${key.team_id}` }));
      }
      tr.append(el("td", key.id), name, prefix, status, limits, team,
        el("td", when(lastUsed), { class: "last-use" }), el("td", when(key.created_at)),
        el("td", key.expires_at ? when(key.expires_at) : "never"),
        el("td", key.has_signing_secret ? "own" : "shared"), actions);
      return tr;
    }

    dialog.addEventListener("close", async () => {
      const key = revoking;
      revoking = null;
      if (dialog.returnValue !== "revoke" || !key) return;
      try {
        await api("POST", `/console/api/keys/${key.id}/revoke`);
      } catch (err) {
        error.textContent = `Key ${key.id} was not revoked: ${err.message}`;
      }
      await load();
    });

    const created = document.getElementById("created");
    function forgetCreated() {
      // The plaintext exists only in this panel; once dismissed it is gone.
      document.getElementById("created-key").textContent = "";
      document.getElementById("created-secret").textContent = "";
      document.getElementById("created-name").textContent = "";
      created.hidden = true;
    }
    document.getElementById("created-done").addEventListener("click", forgetCreated);

    const form = document.getElementById("create-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const createError = document.getElementById("create-error");
      const fields = new FormData(form);
      const request = {
        name: String(fields.get("name") ?? ""), signing_secret: fields.get("signing_secret") === "on", ...limitFields(fields),
      };
      const expires = String(fields.get("expires_at") ?? "");
      if (expires) request.expires_at = `${expires.length === 16 ? `${expires}:00` : expires}Z`;
      const teamId = String(fields.get("team_id") ?? "");
      if (teamId) request.team_id = Number(teamId);
      try {
        const key = await api("POST", "/console/api/keys", request);
        forgetCreated();
        document.getElementById("created-name").textContent = key.name;
        document.getElementById("created-key").textContent = key.key;
        for (const node of document.querySelectorAll(".created-secret")) node.hidden = !key.signing_secret;
        document.getElementById("created-secret").textContent = key.signing_secret ?? "";
        created.hidden = false;
        createError.textContent = "";
        delete createError.dataset.field;
        form.reset();
      } catch (err) {
        createError.textContent = `The key was not created: ${refusal(err)}`;
        createError.dataset.field = err.field ?? "";
      }
      await load();
    });

    await load();
    setInterval(load, REFRESH_MS);
  }

  // ---- one key's plots ----------------------------------------------------
  const DENIAL_COLOURS = ["#c0392b", "#d35400", "#8e44ad", "#2c3e50", "#16a085", "#7f8c8d", "#b7950b", "#1f618d"];
  const MODEL_COLOURS = ["#2e86c1", "#28b463", "#af7ac5", "#f39c12", "#5d6d7e", "#e74c3c", "#1abc9c", "#a04000"];

  /** The tokens plot's datasets: per model, its input and its output tokens (a lighter shade), stacked. */
  function tokenDatasets(points) {
    const models = [...new Set(points.flatMap((p) => Object.keys(p.models ?? {})))].sort();
    return models.flatMap((model, i) => {
      const colour = MODEL_COLOURS[i % MODEL_COLOURS.length];
      const of = (field) => points.map((p) => p.models?.[model]?.[field] ?? 0);
      return [
        { label: `${model} input`, data: of("input_tokens"), backgroundColor: colour, stack: "tokens" },
        { label: `${model} output`, data: of("output_tokens"), backgroundColor: `${colour}88`, stack: "tokens" },
      ];
    });
  }

  /** The window's token totals per model, as rows of the model table. */
  function modelTotals(points) {
    const totals = new Map();
    for (const p of points) {
      for (const [model, t] of Object.entries(p.models ?? {})) {
        const sum = totals.get(model) ?? { input_tokens: 0, cached_input_tokens: 0, output_tokens: 0, reasoning_tokens: 0 };
        for (const field of Object.keys(sum)) sum[field] += t[field] ?? 0;
        totals.set(model, sum);
      }
    }
    return [...totals.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([model, t]) => {
      const tr = el("tr", null, { "data-model": model });
      tr.append(el("td", model), el("td", number.format(t.input_tokens), { class: "value" }),
        el("td", number.format(t.cached_input_tokens), { class: "value" }),
        el("td", number.format(t.output_tokens), { class: "value" }),
        el("td", number.format(t.reasoning_tokens), { class: "value" }));
      return tr;
    });
  }

  /** A cost in micro-units as an amount with six decimals and its currency: "12.345678 USD". */
  function cost(micros, currency) {
    const whole = Math.floor(micros / 1e6);
    const fraction = String(micros % 1e6).padStart(6, "0");
    return `${number.format(whole)}.${fraction} ${currency ?? ""}`.trim();
  }

  /** The spend table's rows: per model of the summary, its cost ("unpriced" when its calls had no price). */
  function modelSpend(rows) {
    return rows.filter((r) => r.model !== null).map((r) => {
      const tr = el("tr", null, { "data-model": r.model });
      const text = r.cost_micros !== null ? cost(r.cost_micros, r.currency) : r.unpriced_rows > 0 ? "unpriced" : "-";
      tr.append(el("td", r.model), el("td", text, { class: "value" }),
        el("td", number.format(r.priced_rows), { class: "value" }),
        el("td", number.format(r.unpriced_rows), { class: "value" }));
      return tr;
    });
  }

  /** The summary's `since` for a window: it starts at the start of that hour. */
  const SPEND_SINCE = { hour: "1h", day: "24h", "30d": "30d" };

  async function loadSpend(id, window) {
    const status = document.getElementById("model-spend-status");
    let summary;
    try {
      summary = await api("GET", `/console/api/usage/summary?key=${id}&by=model&since=${SPEND_SINCE[window]}`);
    } catch (err) {
      status.textContent = `The spend could not be read: ${err.message}`;
      return;
    }
    const rows = modelSpend(summary.rows);
    document.querySelector("#model-spend tbody").replaceChildren(...rows);
    status.textContent = rows.length > 0
      ? `Since ${when(summary.since)}, in whole hours; each call was priced once, when it was stored.`
      : "No LLM calls since the start of this window.";
  }

  /** The spend plot's datasets: per model, its cost per bucket in whole currency units, stacked. */
  function spendDatasets(points) {
    const models = [...new Set(points.flatMap((p) => Object.keys(p.spend ?? {})))].sort();
    return models.map((model, i) => ({
      label: model,
      data: points.map((p) => (p.spend?.[model]?.cost_micros ?? 0) / 1e6),
      backgroundColor: MODEL_COLOURS[i % MODEL_COLOURS.length],
      stack: "spend",
    }));
  }

  /** One budget as a bar of used, reserved and left, with its figures. */
  function budgetBar(b) {
    const box = el("div", null, { class: "budget", "data-quota": b.quota });
    const head = el("div", null, { class: "budget-head" });
    head.append(el("strong", b.quota), el("span", ` per ${b.window}, ${when(b.window_start)} to ${when(b.window_end)}`, { class: "note" }));
    const bar = el("div", null, { class: "bar", role: "img" });
    // Settled quotas can pass their limit (a response is served, then
    // charged): the bar's whole is then what was charged.
    const whole = Math.max(b.limit, b.used + b.reserved, 1);
    for (const part of ["used", "reserved", "left"]) {
      const segment = el("span", null, { class: part });
      segment.style.width = `${(100 * b[part]) / whole}%`;
      bar.append(segment);
    }
    bar.setAttribute("aria-label", `${b.quota}: ${b.used} used, ${b.reserved} reserved, ${b.left} left of ${b.limit}`);
    const figures = el("div", null, { class: "budget-figures" });
    const figure = (part, value) => {
      const n = el("span", number.format(value), { class: `n-${part}`, "data-value": String(value) });
      return [n, ` ${part}`];
    };
    const percent = b.limit > 0 ? ` (${Math.round((100 * (b.used + b.reserved)) / b.limit)} % taken)` : "";
    figures.append(...figure("used", b.used), " · ", ...figure("reserved", b.reserved), " · ",
      ...figure("left", b.left), " of ", el("span", number.format(b.limit), { class: "n-limit", "data-value": String(b.limit) }),
      ` · charged ${number.format(b.charged)}${percent}`);
    box.append(head, bar, figures);
    return box;
  }

  async function loadBudgets(id) {
    const status = document.getElementById("budgets-status");
    try {
      const reply = await api("GET", `/console/api/keys/${id}/budgets`);
      document.getElementById("budgets").replaceChildren(...reply.budgets.map(budgetBar));
      status.textContent = reply.budgets.length > 0
        ? `Read ${when(reply.at)}.`
        : "This key has no quota.";
      status.dataset.read = reply.at;
    } catch (err) {
      status.textContent = `The budgets could not be read: ${err.message}`;
    }
  }

  function startOf(point) {
    const s = point.start;
    if (typeof s === "number") return new Date(s > 1e12 ? s : s * 1000);
    return new Date(s);
  }

  function label(date, window) {
    const iso = date.toISOString();
    return window === "30d" ? iso.slice(5, 10) : iso.slice(11, 16);
  }

  function chart(id, type, stacked) {
    return new window.Chart(document.getElementById(id), {
      type,
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { stacked, ticks: { maxTicksLimit: 12 } }, y: { stacked, beginAtZero: true } },
        plugins: { legend: { display: true, position: "bottom" } },
      },
    });
  }

  /** Fills `select` with "none" and every team, keeping what it shows unless `chosen` is given. */
  function fillTeamOptions(select, teams, chosen) {
    const keep = chosen !== undefined ? chosen : select.value;
    select.replaceChildren(el("option", "none", { value: "" }),
      ...teams.map((t) => el("option", `${t.name} (${t.id})`, { value: String(t.id) })));
    select.value = teams.some((t) => String(t.id) === keep) ? keep : "";
  }

  /** A key's page: its team, and the form that moves it into another team or out of its own. */
  async function loadKeyTeam(key) {
    const form = document.getElementById("key-team-form");
    const error = document.getElementById("key-team-error");
    form.hidden = !key;
    if (!key) return;
    const teams = (await api("GET", "/console/api/teams")).teams;
    const current = key.team_id === null || key.team_id === undefined ? "" : String(key.team_id);
    const select = document.getElementById("key-team");
    fillTeamOptions(select, teams, current);
    const link = document.getElementById("key-team-link");
    const team = teams.find((t) => String(t.id) === current);
    link.replaceChildren(...(team ? ["now in ", el("a", team.name, { href: `/console/teams#team-${team.id}` })] : ["in no team"]));
    form.onsubmit = async (event) => {
      event.preventDefault();
      const value = select.value;
      try {
        await api("PUT", `/console/api/keys/${key.id}/team`, { team_id: value ? Number(value) : null });
        error.textContent = "";
        const list = await api("GET", "/console/api/keys");
        await loadKeyTeam(list.keys.find((k) => k.id === key.id));
      } catch (err) {
        error.textContent = `The key was not moved: ${refusal(err)}`;
      }
    };
  }

  async function keyPage() {
    const id = document.body.dataset.keyId;
    const status = document.getElementById("series-status");
    const charts = {
      requests: chart("chart-requests", "bar", false),
      bytes: chart("chart-bytes", "line", false),
      units: chart("chart-units", "bar", false),
      denials: chart("chart-denials", "bar", true),
      tokens: chart("chart-tokens", "bar", true),
      spend: chart("chart-spend", "bar", true),
    };
    let current = "hour";

    async function loadKey() {
      try {
        const list = await api("GET", "/console/api/keys");
        const key = list.keys.find((k) => String(k.id) === id);
        document.getElementById("key-title").textContent = key ? `${key.name} (${key.prefix}…)` : id;
        document.getElementById("key-facts").textContent = key
          ? `Status ${key.status} · created ${when(key.created_at)} · expires ${key.expires_at ? when(key.expires_at) : "never"} · signing secret: ${key.has_signing_secret ? "own" : "shared"}`
          : "No key has this id.";
        document.getElementById("key-limits").textContent = key ? limitsText(key.limits) : "";
        await loadKeyTeam(key);
        document.getElementById("key-limits-edit").hidden = !key;
        document.getElementById("key-limits-edit").onclick = () => editLimits(keyLimits(key), async () => {
          await loadKey();
          await loadBudgets(id);
        });
      } catch (err) {
        document.getElementById("key-facts").textContent = `The key could not be read: ${err.message}`;
      }
    }
    await loadKey();

    async function load() {
      const window = current;
      let series;
      try {
        series = await api("GET", `/console/api/keys/${id}/usage/series?window=${window}`);
      } catch (err) {
        status.textContent = err.status === 404 && !err.message.startsWith("no key")
          ? "This sidecar has no usage series (GET /v1/keys/{id}/usage/series)."
          : `The usage series could not be read: ${err.message}`;
        return;
      }
      if (window !== current) return;
      const points = series.points;
      const labels = points.map((p) => label(startOf(p), window));
      const codes = [...new Set(points.flatMap((p) => Object.keys(p.denials ?? {})))].sort();
      charts.requests.data = {
        labels, datasets: [{ label: "requests", data: points.map((p) => p.requests), backgroundColor: "#2e86c1" }],
      };
      charts.bytes.data = {
        labels,
        datasets: [
          { label: "request bytes", data: points.map((p) => p.request_bytes), borderColor: "#1e8449", backgroundColor: "#1e8449", pointRadius: 0 },
          { label: "response bytes", data: points.map((p) => p.response_bytes), borderColor: "#884ea0", backgroundColor: "#884ea0", pointRadius: 0 },
        ],
      };
      charts.units.data = {
        labels, datasets: [{ label: "units", data: points.map((p) => p.units ?? 0), backgroundColor: "#ca6f1e" }],
      };
      charts.denials.data = {
        labels,
        datasets: codes.map((code, i) => ({
          label: code, data: points.map((p) => p.denials?.[code] ?? 0), backgroundColor: DENIAL_COLOURS[i % DENIAL_COLOURS.length],
        })),
      };
      charts.tokens.data = { labels, datasets: tokenDatasets(points) };
      charts.spend.data = { labels, datasets: spendDatasets(points) };
      charts.spend.options.scales.y.title = { display: Boolean(series.currency), text: series.currency ?? "" };
      document.getElementById("spend-chart-status").textContent = series.currency
        ? `In ${series.currency}.`
        : "No price is set (tollgate prices set), so no call has a cost.";
      for (const c of Object.values(charts)) c.update("none");
      const models = modelTotals(points);
      document.querySelector("#model-totals tbody").replaceChildren(...models);
      document.getElementById("model-totals-empty").hidden = models.length > 0;
      await loadSpend(id, window);
      await loadBudgets(id);
      const sum = (f) => points.reduce((acc, p) => acc + f(p), 0);
      const denials = sum((p) => Object.values(p.denials ?? {}).reduce((a, n) => a + n, 0));
      document.getElementById("total-requests").textContent = number.format(sum((p) => p.requests));
      document.getElementById("total-request-bytes").textContent = number.format(sum((p) => p.request_bytes));
      document.getElementById("total-response-bytes").textContent = number.format(sum((p) => p.response_bytes));
      document.getElementById("total-units").textContent = number.format(sum((p) => p.units ?? 0));
      document.getElementById("total-denials").textContent = number.format(denials);
      status.textContent = `${points.length} buckets of ${series.bucket_s} s, ${when(series.from)} to ${when(series.to)}; read ${when(new Date().toISOString())}`;
      status.dataset.window = window;
    }

    for (const button of document.querySelectorAll("[data-window]")) {
      button.addEventListener("click", () => {
        current = button.dataset.window;
        for (const b of document.querySelectorAll("[data-window]")) b.setAttribute("aria-pressed", String(b === button));
        load();
      });
    }
    await load();
    setInterval(load, REFRESH_MS);
  }

  // ---- teams: their keys, limits and budgets ------------------------------
  async function teamsPage() {
    const container = document.getElementById("teams");
    const status = document.getElementById("teams-status");
    const error = document.getElementById("teams-error");
    const dialog = document.getElementById("delete-team-dialog");
    let deleting = null;
    // The cards are rebuilt only when a team or a key changed, so a choice
    // being made in a card's select survives the refresh; the bars are
    // redrawn every time.
    let shown = "";

    async function act(what, call) {
      try {
        await call();
        error.textContent = "";
        delete error.dataset.code;
      } catch (err) {
        error.textContent = `${what}: ${refusal(err)}`;
        error.dataset.code = err.code ?? "";
      }
      await load();
    }

    const moveKey = (keyId, teamId) => api("PUT", `/console/api/keys/${keyId}/team`, { team_id: teamId });

    function card(team, keys) {
      const box = el("section", null, { class: "team", id: `team-${team.id}`, "data-team-id": String(team.id) });
      const head = el("div", null, { class: "team-head" });
      head.append(el("h3", team.name), el("span", `team ${team.id} · created ${when(team.created_at)}`, { class: "note" }));
      const limits = el("p", "Limits: ", { class: "limits-line" });
      const edit = el("button", "Change limits", { type: "button", class: "edit-limits" });
      edit.addEventListener("click", () => editLimits(teamLimits(team), load));
      const remove = el("button", "Delete", { type: "button", class: "danger delete-team" });
      remove.addEventListener("click", () => {
        deleting = team;
        document.getElementById("delete-team-name").textContent = team.name;
        dialog.showModal();
      });
      limits.append(el("code", limitsText(team.limits), { class: "team-limits" }), " ", edit, " ", remove);

      const members = keys.filter((k) => k.team_id === team.id);
      const table = el("table", null, { class: "team-keys" });
      const thead = el("thead");
      const headRow = el("tr");
      headRow.append(...["ID", "Key", "Prefix", "Status", "Limits", ""].map((h) => el("th", h)));
      thead.append(headRow);
      const tbody = el("tbody");
      tbody.append(...members.map((key) => {
        const tr = el("tr", null, { "data-key-id": String(key.id) });
        const name = el("td"); name.append(el("a", key.name, { href: `/console/keys/${key.id}` }));
        const prefix = el("td"); prefix.append(el("code", key.prefix));
        const status = el("td"); status.append(el("span", key.status, { class: `status ${key.status.toLowerCase()}` }));
        const own = el("td", null, { class: "limits" }); own.append(el("code", limitsText(key.limits)));
        const actions = el("td", null, { class: "actions" });
        const out = el("button", "Take out of the team", { type: "button", class: "take-out" });
        out.addEventListener("click", () => act(`Key ${key.id} was not taken out`, () => moveKey(key.id, null)));
        actions.append(out);
        tr.append(el("td", key.id), name, prefix, status, own, actions);
        return tr;
      }));
      table.append(thead, tbody);

      const add = el("form", null, { class: "add-key" });
      const label = el("label", "Move a key into this team ");
      const select = el("select", null, { name: "key_id" });
      const others = keys.filter((k) => k.team_id !== team.id && k.status !== "REVOKED");
      select.append(el("option", "choose a key", { value: "" }), ...others.map((k) => {
        const from = k.team_id !== null && k.team_id !== undefined ? ` · now in team ${k.team_id}` : "";
        return el("option", `${k.name} (${k.id})${from}`, { value: String(k.id) });
      }));
      label.append(select);
      add.append(label, el("button", "Move here", { type: "submit" }));
      add.addEventListener("submit", (event) => {
        event.preventDefault();
        if (!select.value) return;
        act(`The key was not moved into team ${team.name}`, () => moveKey(Number(select.value), team.id));
      });

      const budgets = el("div", null, { class: "team-budgets" });
      const budgetsStatus = el("p", null, { class: "note team-budgets-status", role: "status" });
      box.append(head, limits, members.length > 0 ? table : el("p", "No key in this team.", { class: "note" }), add,
        el("h4", "Budgets now"), budgetsStatus, budgets);
      return box;
    }

    async function loadBudgets(team) {
      const box = container.querySelector(`.team[data-team-id="${team.id}"]`);
      if (!box) return;
      const status = box.querySelector(".team-budgets-status");
      try {
        const reply = await api("GET", `/console/api/teams/${team.id}/budgets`);
        box.querySelector(".team-budgets").replaceChildren(...reply.budgets.map(budgetBar));
        status.textContent = reply.budgets.length > 0
          ? `Read ${when(reply.at)}; the use of keys ${reply.key_ids.join(", ") || "(none)"}.`
          : "This team has no quota.";
        status.dataset.read = reply.at;
      } catch (err) {
        status.textContent = `The budgets could not be read: ${err.message}`;
      }
    }

    async function load() {
      let teams;
      let keys;
      try {
        [teams, keys] = await Promise.all([api("GET", "/console/api/teams"), api("GET", "/console/api/keys")]);
      } catch (err) {
        status.textContent = `The teams could not be read: ${err.message}`;
        return;
      }
      const shape = JSON.stringify([teams.teams, keys.keys.map((k) => [k.id, k.name, k.prefix, k.status, k.team_id, k.limits])]);
      if (shape !== shown) {
        container.replaceChildren(...teams.teams.map((t) => card(t, keys.keys)));
        shown = shape;
      }
      document.getElementById("teams-empty").hidden = teams.teams.length > 0;
      await Promise.all(teams.teams.map(loadBudgets));
      status.textContent = `${teams.teams.length} team(s); read ${when(new Date().toISOString())}, refreshed every ${REFRESH_MS / 1000} s.`;
    }

    dialog.addEventListener("close", async () => {
      const team = deleting;
      deleting = null;
      if (dialog.returnValue !== "delete" || !team) return;
      await act(`Team ${team.name} was not deleted`, () => api("DELETE", `/console/api/teams/${team.id}`));
    });

    const form = document.getElementById("team-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const createError = document.getElementById("team-create-error");
      const fields = new FormData(form);
      try {
        await api("POST", "/console/api/teams", { name: String(fields.get("name") ?? ""), ...limitFields(fields) });
        createError.textContent = "";
        delete createError.dataset.field;
        form.reset();
      } catch (err) {
        createError.textContent = `The team was not created: ${refusal(err)}`;
        createError.dataset.field = err.field ?? "";
      }
      await load();
    });

    await load();
    setInterval(load, REFRESH_MS);
  }

  // ---- budget alerts and their events -------------------------------------
  // The budget an alert or an event is about: a key's (its page) or a
  // team's (the teams page).
  function budgetCell(keyId, teamId, name) {
    const td = el("td");
    if (teamId !== undefined && teamId !== null) {
      td.append(el("a", name ? `team ${name} (${teamId})` : `team ${teamId}`, { href: "/console/teams" }));
    } else if (keyId !== undefined && keyId !== null) {
      td.append(el("a", name ? `key ${name} (${keyId})` : `key ${keyId}`, { href: `/console/keys/${keyId}` }));
    }
    return td;
  }

  async function alertsPage() {
    const status = document.getElementById("alerts-status");
    function fill(id, rows) {
      document.querySelector(`#${id} tbody`).replaceChildren(...rows);
      document.getElementById(`${id}-empty`).hidden = rows.length > 0;
    }
    async function load() {
      try {
        const [list, history, failed] = await Promise.all([
          api("GET", "/console/api/alerts"), api("GET", "/console/api/alerts/events"),
          api("GET", "/console/api/alerts?failed=true")]);
        fill("alerts", list.alerts.map((a) => {
          const tr = el("tr", null, { "data-alert-id": String(a.id) });
          tr.append(el("td", a.id), budgetCell(a.key_id, a.team_id), el("td", a.thresholds.map((t) => `${t} %`).join(", ")),
            el("td", a.url), el("td", a.secret_source === "env" ? `env ${a.secret_env}` : "generated"),
            el("td", when(a.created_at)));
          return tr;
        }));
        fill("alert-events", history.events.map((e) => {
          const tr = el("tr", null, { "data-event-id": e.id, "data-state": e.state });
          const p = e.payload?.data ?? e.payload ?? {};
          const used = p.used !== undefined && p.limit !== undefined
            ? `${number.format(p.used)} of ${number.format(p.limit)}` : "–";
          const teamId = p.budget?.team_id;
          const owner = teamId !== undefined && teamId !== null
            ? budgetCell(null, teamId, p.team?.name)
            : budgetCell(p.key?.id ?? p.budget?.key_id, null, p.key?.name);
          tr.append(el("td", when(e.created_at)), el("td", e.alert_id), owner, el("td", e.quota),
            el("td", when(e.window_start)), el("td", `${e.threshold} %`), el("td", used),
            el("td", null), el("td", e.attempts, { class: "value" }),
            el("td", e.delivered_at ? when(e.delivered_at) : (e.last_error ?? "")));
          tr.children[7].append(el("span", e.state, { class: `status ${e.state}` }));
          return tr;
        }));
        fill("failed-events", failed.events.map((e) => {
          const tr = el("tr", null, { "data-event-id": e.id });
          tr.append(el("td", when(e.created_at)), el("td", e.alert_id), el("td", e.quota),
            el("td", `${e.threshold} %`), el("td", e.attempts, { class: "value" }), el("td", e.last_error ?? ""));
          return tr;
        }));
        status.textContent = `Read ${when(new Date().toISOString())}; refreshed every ${REFRESH_MS / 1000} s.`;
      } catch (err) {
        status.textContent = `The alerts could not be read: ${err.message}`;
      }
    }
    await load();
    setInterval(load, REFRESH_MS);
  }

  // ---- the gateway: its last hour, and every live figure one click away ---
  function lineChart(id, yTitle, options = {}) {
    return new window.Chart(document.getElementById(id), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        elements: { point: { radius: 0 } },
        scales: {
          x: { ticks: { maxTicksLimit: 12 } },
          y: { beginAtZero: true, title: { display: true, text: yTitle }, ...options.y },
        },
        plugins: { legend: { display: true, position: "bottom" } },
      },
    });
  }

  const line = (label, data, colour) => ({ label, data, borderColor: colour, backgroundColor: colour, spanGaps: false });

  async function gatewayPage() {
    const charts = {
      requests: lineChart("chart-gw-requests", "per second"),
      cache: lineChart("chart-gw-cache", "hit ratio", { y: { min: 0, max: 1 } }),
      verify: lineChart("chart-gw-verify", "ms"),
      usage: lineChart("chart-gw-usage", "records"),
    };
    const historyStatus = document.getElementById("history-status");
    async function loadHistory() {
      let history;
      try {
        history = await api("GET", "/console/api/gateway/history");
      } catch (err) {
        historyStatus.textContent = `The last hour could not be read: ${err.message}`;
        return;
      }
      const points = history.points;
      const labels = points.map((p) => p.at.slice(11, 19));
      const of = (f) => points.map((p) => f(p) ?? null);
      const codes = [...new Set(points.flatMap((p) => Object.keys(p.denied_per_s ?? {})))].sort();
      charts.requests.data = {
        labels,
        datasets: [line("allowed", of((p) => p.allowed_per_s), "#1e8449"),
          ...codes.map((code, i) => line(code, of((p) => (p.allowed_per_s === null ? null : p.denied_per_s?.[code] ?? 0)),
            DENIAL_COLOURS[i % DENIAL_COLOURS.length]))],
      };
      charts.cache.data = { labels, datasets: [line("hit ratio", of((p) => p.cache_hit_ratio), "#2e86c1")] };
      charts.verify.data = {
        labels,
        datasets: [line("p50", of((p) => p.verify_p50_ms), "#28b463"), line("p90", of((p) => p.verify_p90_ms), "#f39c12"),
          line("p99", of((p) => p.verify_p99_ms), "#c0392b")],
      };
      charts.usage.data = {
        labels,
        datasets: [line("buffered", of((p) => p.buffered), "#884ea0"), line("refused per second", of((p) => p.refused_per_s), "#c0392b")],
      };
      for (const c of Object.values(charts)) c.update("none");
      const envoy = history.envoy_configured ? "" : " The sidecar was not told where Envoy's admin is (TOLLGATE_ENVOY_ADMIN_URL): the sidecar's figures only.";
      historyStatus.textContent = points.length > 0
        ? `The last ${Math.round(points.reduce((a, p) => a + p.seconds, 0) / 60)} min, one point per ${history.sample_every_s} s sample (kept by the sidecar for an hour).${envoy}`
        : `Sampled every ${history.sample_every_s} s: the first point comes after two samples.${envoy}`;
      historyStatus.dataset.points = String(points.length);
    }

    function fill(table, metrics) {
      table.querySelector("tbody").replaceChildren(...metrics.map((m) => {
        const tr = el("tr", null, { "data-metric": m.name });
        tr.append(el("td", m.name), el("td", m.labels), el("td", m.value, { class: "value" }));
        return tr;
      }));
    }
    const raw = document.getElementById("raw-figures");
    async function loadRaw() {
      if (raw.hidden) return;
      const readAt = document.getElementById("gateway-read-at");
      try {
        const figures = await api("GET", "/console/api/gateway");
        const envoy = figures.envoy;
        const envoyStatus = document.getElementById("envoy-status");
        if (!envoy.configured) {
          envoyStatus.textContent = "The sidecar was not told where Envoy's admin is (TOLLGATE_ENVOY_ADMIN_URL).";
        } else if (envoy.error) {
          envoyStatus.textContent = `From ${envoy.url}: could not be read (${envoy.error}).`;
        } else {
          envoyStatus.textContent = `From ${envoy.url}/stats/prometheus.`;
        }
        fill(document.getElementById("envoy-metrics"), envoy.metrics);
        fill(document.getElementById("sidecar-metrics"), figures.sidecar);
        readAt.textContent = `Read ${when(figures.read_at)}; refreshed every ${REFRESH_MS / 1000} s.`;
      } catch (err) {
        readAt.textContent = `The figures could not be read: ${err.message}`;
      }
    }
    const toggle = document.getElementById("raw-toggle");
    toggle.addEventListener("click", () => {
      raw.hidden = !raw.hidden;
      toggle.setAttribute("aria-expanded", String(!raw.hidden));
      toggle.textContent = raw.hidden ? "Show every figure" : "Hide every figure";
      loadRaw();
    });
    await loadHistory();
    setInterval(() => { loadHistory(); loadRaw(); }, REFRESH_MS);
  }

  const pages = { keys: keysPage, key: keyPage, teams: teamsPage, alerts: alertsPage, gateway: gatewayPage };
  pages[page]?.();
})();
