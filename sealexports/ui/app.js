// The exports page: sign in, build a request, estimate it, create it, and watch the jobs.
import { ApiError, call, session } from "./api.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["pending", "estimating", "generating"]);
const STATUS_WORDS = {
  pending: "Waiting", estimating: "Estimating", generating: "Generating",
  completed: "Ready", failed: "Failed", expired: "Expired",
};
const TYPE_WORDS = Object.fromEntries(
  [...document.querySelectorAll("#export_type option")].map((o) => [o.value, o.textContent]),
);
const number = new Intl.NumberFormat("en");

const $ = (id) => document.getElementById(id);
const state = {
  sites: [], site: null, jobs: new Map(), values: new Map(), rows: 0, timer: null, estimates: 0, estimateTimer: null,
};

// --- small helpers ---------------------------------------------------------------------------

function announce(text, { error = false } = {}) {
  $("status").textContent = text;
  $("status").classList.toggle("is-error", error);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return isoDay(d);
}

function todayIn(timezone) {
  // en-CA writes dates as YYYY-MM-DD
  return new Intl.DateTimeFormat("en-CA", { timeZone: timezone }).format(new Date());
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// --- signing in ------------------------------------------------------------------------------

async function signIn(key) {
  const data = await call("GET", "sites", { key });
  session.key = key;
  state.sites = data.sites;
  const select = $("site");
  select.replaceChildren(...data.sites.map((s) => el("option", { value: s.site_id, text: s.name === s.site_id ? s.name : `${s.name} (${s.site_id})` })));
  $("account-label").textContent = `Key ${key.slice(0, 12)}…`;
  show($("account"), true);
  show($("signin"), false);
  show($("create"), data.sites.length > 0);
  show($("jobs"), data.sites.length > 0);
  if (!data.sites.length) {
    announce("This key has no sites to export from yet. Create one with: sealexports sites create.");
    return;
  }
  await chooseSite(data.sites[0].site_id);
  startPolling();
}

function signOut(message) {
  session.key = null;
  stopPolling();
  state.jobs.clear();
  state.values.clear();
  $("job-list").replaceChildren();
  show($("account"), false);
  show($("create"), false);
  show($("jobs"), false);
  show($("signin"), true);
  announce(message, { error: message !== "Signed out." });
  $("key").focus();
}

// Any call: a 401 means the key is no longer good; sign out and say why.
async function api(method, path, options = {}) {
  try {
    return await call(method, path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut(err.message);
    throw err;
  }
}

// --- the site and its dates ------------------------------------------------------------------

async function chooseSite(siteId) {
  const site = state.sites.find((s) => s.site_id === siteId);
  state.site = site;
  $("site").value = siteId;
  const span = site.first_day
    ? `Data from ${site.first_day} to ${site.last_day}; days in ${site.timezone}.`
    : `No data yet; days in ${site.timezone}.`;
  $("site-span").textContent = span;
  $("quick-help").textContent = `Quick ranges end on ${anchor()}${site.last_day && site.last_day < todayIn(site.timezone) ? ", the last day with data" : ", today"}.`;
  setRange("last30");
  await loadJobs();
}

function anchor() {
  const site = state.site;
  const today = todayIn(site.timezone);
  return site.last_day && site.last_day < today ? site.last_day : today;
}

function setRange(name) {
  const end = anchor();
  let from = end;
  let to = end;
  if (name === "last7") from = addDays(end, -6);
  else if (name === "last30") from = addDays(end, -29);
  else if (name === "month") from = `${end.slice(0, 8)}01`;
  else if (name === "prevmonth") {
    to = addDays(`${end.slice(0, 8)}01`, -1);
    from = `${to.slice(0, 8)}01`;
  } else if (name === "all" && state.site.first_day) {
    from = state.site.first_day;
    to = state.site.last_day;
  }
  $("date_from").value = from;
  $("date_to").value = to;
  datesChanged();
}

function datesChanged() {
  staleEstimate();
  for (const row of document.querySelectorAll(".filter-row")) fillValues(row);
}

// --- filters ---------------------------------------------------------------------------------

function addFilterRow(key) {
  const n = ++state.rows;
  const row = $("filter-row").content.firstElementChild.cloneNode(true);
  const [keyLabel, valueLabel] = row.querySelectorAll("label");
  const select = row.querySelector(".filter-key");
  const input = row.querySelector(".filter-value");
  const list = row.querySelector("datalist");
  const [hint, error] = row.querySelectorAll(".field.grow p");
  select.id = `filter-key-${n}`;
  keyLabel.htmlFor = select.id;
  input.id = `filter-value-${n}`;
  valueLabel.htmlFor = input.id;
  list.id = `filter-values-${n}`;
  input.setAttribute("list", list.id);
  hint.id = `filter-hint-${n}`;
  error.id = `filter-error-${n}`;
  input.setAttribute("aria-describedby", `${error.id} ${hint.id}`);
  if (key) select.value = key;
  select.addEventListener("change", () => { input.value = ""; fillValues(row); });
  row.querySelector(".remove-filter").addEventListener("click", () => {
    row.remove();
    staleEstimate();
    $("add-filter").focus();
  });
  $("filter-rows").append(row);
  fillValues(row);
  return row;
}

async function fillValues(row) {
  const key = row.querySelector(".filter-key").value;
  const hint = row.querySelector(".filter-hint");
  const list = row.querySelector("datalist");
  const query = { key, date_from: $("date_from").value, date_to: $("date_to").value, limit: 200 };
  const cacheKey = JSON.stringify([state.site.site_id, query]);
  if (!state.values.has(cacheKey)) {
    state.values.set(cacheKey, api("GET", `sites/${encodeURIComponent(state.site.site_id)}/values`, { query }));
  }
  try {
    const data = await state.values.get(cacheKey);
    if (row.querySelector(".filter-key").value !== key) return;  // changed meanwhile
    list.replaceChildren(...data.values.map((v) => el("option", { value: v.value, label: `${number.format(v.count)} ${data.unit}` })));
    hint.textContent = data.values.length === 0
      ? "No values in these dates."
      : `${data.truncated ? `The ${data.values.length} most frequent values` : `${data.values.length} value${data.values.length === 1 ? "" : "s"}`} in these dates, as suggestions.`;
  } catch (err) {
    state.values.delete(cacheKey);
    hint.textContent = `Suggestions unavailable: ${err.message}`;
  }
}

// --- the request, its errors, its estimate ---------------------------------------------------

function exportBody() {
  const filters = {};
  for (const row of document.querySelectorAll(".filter-row")) {
    const key = row.querySelector(".filter-key").value;
    const value = row.querySelector(".filter-value").value.trim();
    if (value) (filters[key] ||= []).push(value);
  }
  for (const [key, values] of Object.entries(filters)) if (values.length === 1) filters[key] = values[0];
  const advanced = $("advanced").value;
  if (advanced.trim()) filters.advanced_filters = advanced;
  const body = {
    export_type: $("export_type").value,
    format: $("format").value,
    date_from: $("date_from").value,
    date_to: $("date_to").value,
  };
  if (Object.keys(filters).length) body.filters = filters;
  return body;
}

function clearErrors() {
  for (const node of document.querySelectorAll("#export-form .error")) {
    node.textContent = "";
    node.hidden = true;
  }
  for (const node of document.querySelectorAll("#export-form [aria-invalid]")) node.removeAttribute("aria-invalid");
}

// The input a field path of an error names, and where its message goes.
function fieldTarget(field) {
  const name = String(field || "").replace(/^body\./, "");
  if (["date_from", "date_to", "export_type", "format"].includes(name)) return [$(name), $(`${name}-error`)];
  if (name === "filters.advanced_filters") return [$("advanced"), $("advanced-error")];
  if (name.startsWith("filters.")) {
    const key = name.slice("filters.".length);
    for (const row of document.querySelectorAll(".filter-row")) {
      if (row.querySelector(".filter-key").value === key) {
        return [row.querySelector(".filter-value"), row.querySelector(".field.grow .error")];
      }
    }
  }
  return null;
}

function showError(err, { focus = true } = {}) {
  clearErrors();
  let first = null;
  for (const f of err.fields || []) {
    const target = fieldTarget(f.field);
    if (!target) continue;
    const [input, slot] = target;
    input.setAttribute("aria-invalid", "true");
    slot.textContent = f.message.charAt(0).toUpperCase() + f.message.slice(1);
    slot.hidden = false;
    first ||= input;
  }
  if (!first) {
    $("form-error").textContent = err.message;
    $("form-error").hidden = false;
  }
  announce(err.message, { error: true });
  if (first && focus) first.focus();
}

function describeEstimate(est) {
  const size = `about ${number.format(est.estimated_rows)} rows, ${est.estimated_size_human}`;
  if (!est.will_use_background_job) return `Estimate: ${size}. Small enough to be ready at once.`;
  const secs = est.estimated_duration_seconds;
  return `Estimate: ${size}. It will run in the background${secs ? ` (about ${secs} s)` : ""}; the list below shows its progress.`;
}

// The estimate follows the form: a change asks again (debounced); the button asks at once.
function staleEstimate() {
  $("estimate-out").textContent = "";
  clearTimeout(state.estimateTimer);
  state.estimateTimer = setTimeout(() => estimate({ auto: true }), 600);
}

async function estimate({ auto = false } = {}) {
  clearTimeout(state.estimateTimer);
  if (!state.site) return;
  const asked = ++state.estimates;
  const button = $("estimate");
  if (!auto) button.disabled = true;
  $("estimate-out").textContent = "Estimating…";
  try {
    const est = await api("POST", "exports/estimate", { query: { site_id: state.site.site_id }, body: exportBody() });
    if (asked !== state.estimates) return;  // the form changed meanwhile
    clearErrors();
    $("estimate-out").textContent = describeEstimate(est);
  } catch (err) {
    if (asked !== state.estimates) return;
    $("estimate-out").textContent = "";
    showError(err, { focus: !auto });  // typing on: the focus stays where it is
  } finally {
    if (!auto) button.disabled = false;
  }
}

async function create(event) {
  event.preventDefault();
  clearErrors();
  const button = $("create-button");
  button.disabled = true;
  announce("Creating the export…");
  try {
    const out = await api("POST", "exports", { query: { site_id: state.site.site_id }, body: exportBody() });
    $("estimate-out").textContent = describeEstimate(out.estimate);
    state.jobs.set(out.job.job_id, out.job);
    renderJobs();
    const job = out.job;
    if (job.status === "completed") announce(`Export #${job.id} is ready to download.`);
    else if (job.status === "failed") announce(`Export #${job.id} failed: ${job.error_message}`, { error: true });
    else announce(`Export #${job.id} started in the background.`);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// --- the jobs --------------------------------------------------------------------------------

async function loadJobs() {
  const site = state.site;
  const list = await api("GET", "exports", { query: { site_id: site.site_id, limit: 20 } }).catch((err) => {
    announce(err.message, { error: true });
    return null;
  });
  if (!list || state.site !== site) return;
  const jobs = await Promise.all(list.exports.map((s) => fetchJob(s.job_id).catch(() => null)));
  if (state.site !== site) return;
  state.jobs = new Map(jobs.filter(Boolean).map((j) => [j.job_id, j]));
  renderJobs();
}

function fetchJob(jobId) {
  return api("GET", `exports/${encodeURIComponent(jobId)}`, { query: { site_id: state.site.site_id } });
}

function renderJobs() {
  const ul = $("job-list");
  const jobs = [...state.jobs.values()].sort((a, b) => b.id - a.id);
  const items = jobs.map((job) => {
    const li = ul.querySelector(`li[data-job-id="${job.job_id}"]`) || jobItem(job);
    updateJobItem(li, job);
    return li;
  });
  // Keep existing nodes (and the focus within them); only reorder and drop.
  for (const li of [...ul.children]) if (!state.jobs.has(li.dataset.jobId)) li.remove();
  items.forEach((li, i) => { if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null); });
  show($("jobs-empty"), jobs.length === 0);
}

function jobItem(job) {
  const li = el("li", { class: "job", "data-job-id": job.job_id });
  const title = el("h3", { class: "job-title" });
  const badge = el("span", { class: "badge" });
  const meta = el("p", { class: "job-meta" });
  const progress = el("progress", { max: "100", "aria-label": `Progress of export #${job.id}` });
  const percent = el("span", { class: "percent" });
  const bar = el("div", { class: "progress" }, progress, percent);
  const result = el("p", { class: "job-result" });
  const error = el("p", { class: "error job-error" });
  const remove = el("button", { type: "button", class: "remove-job" });
  remove.addEventListener("click", () => removeJob(job.job_id));
  li.append(el("div", { class: "job-head" }, title, badge), meta, bar, result, error, el("div", { class: "job-actions" }, remove));
  return li;
}

function updateJobItem(li, job) {
  const active = ACTIVE.has(job.status);
  li.className = `job status-${job.status}`;
  li.querySelector(".job-title").textContent = `#${job.id} ${TYPE_WORDS[job.export_type] || job.export_type} · ${job.format.toUpperCase()}`;
  li.querySelector(".badge").textContent = STATUS_WORDS[job.status] || job.status;
  const filters = Object.entries(job.filters || {}).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(" or ") : v}`);
  li.querySelector(".job-meta").textContent =
    `${job.date_from} to ${job.date_to}${filters.length ? ` · ${filters.join(", ")}` : ""} · created ${when(job.created_at)}`;
  const progress = li.querySelector("progress");
  const percent = job.status === "completed" ? 100 : job.progress_percent;
  progress.value = percent;
  li.querySelector(".percent").textContent = `${percent}%`;
  show(li.querySelector(".progress"), active);
  const result = li.querySelector(".job-result");
  if (job.status === "completed" && job.download_url) {
    const link = el("a", { href: job.download_url, download: "", class: "download" }, `Download #${job.id}`);
    const expires = el("time", { datetime: job.download_expires_at }, when(job.download_expires_at));
    result.replaceChildren(
      link,
      ` ${number.format(job.actual_rows)} rows, ${job.file_size_human}. The link expires `, expires, ".",
    );
  } else if (active) {
    result.textContent = `About ${number.format(job.estimated_rows)} rows expected.`;
  } else if (job.status === "expired") {
    result.textContent = "The file has expired and was deleted. Create the export again.";
  } else {
    result.textContent = "";
  }
  const error = li.querySelector(".job-error");
  error.textContent = job.status === "failed" ? `The export failed: ${job.error_message || "no reason given"}` : "";
  show(error, job.status === "failed");
  const remove = li.querySelector(".remove-job");
  remove.textContent = active ? "Cancel" : "Delete";
  remove.setAttribute("aria-label", `${active ? "Cancel" : "Delete"} export #${job.id}`);
}

async function removeJob(jobId) {
  const job = state.jobs.get(jobId);
  if (!job) return;
  const verb = ACTIVE.has(job.status) ? "cancelled" : "deleted";
  try {
    await api("DELETE", `exports/${encodeURIComponent(jobId)}`, { query: { site_id: state.site.site_id } });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      announce(`Export #${job.id} could not be removed. ${err.message}`, { error: true });
      return;
    }
  }
  state.jobs.delete(jobId);
  renderJobs();
  announce(`Export #${job.id} ${verb}.`);
  $("jobs-title").focus();
}

// Poll the running jobs (and completed ones whose link has passed its time).
async function poll() {
  if (!state.site) return;
  const now = Date.now();
  const due = [...state.jobs.values()].filter((j) =>
    ACTIVE.has(j.status) || (j.status === "completed" && j.download_expires_at && Date.parse(j.download_expires_at) <= now));
  for (const before of due) {
    let job;
    try {
      job = await fetchJob(before.job_id);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        state.jobs.delete(before.job_id);
        renderJobs();
      }
      continue;
    }
    if (!state.jobs.has(job.job_id)) continue;  // removed meanwhile
    state.jobs.set(job.job_id, job);
    if (job.status !== before.status) {
      if (job.status === "completed") announce(`Export #${job.id} is ready to download.`);
      else if (job.status === "failed") announce(`Export #${job.id} failed: ${job.error_message}`, { error: true });
    }
  }
  if (due.length) renderJobs();
}

function startPolling() {
  stopPolling();
  const tick = async () => {
    try { await poll(); } finally {
      if (session.key) state.timer = setTimeout(tick, POLL_MS);
    }
  };
  state.timer = setTimeout(tick, POLL_MS);
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

// --- wiring ----------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("key");
  const key = input.value.trim();
  const error = $("key-error");
  error.hidden = true;
  input.removeAttribute("aria-invalid");
  if (!key) {
    error.textContent = "Enter an API key.";
  } else {
    try {
      await signIn(key);
      input.value = "";
      announce("Signed in.");
      $("create-title").focus();
      return;
    } catch (err) {
      error.textContent = err.message;
    }
  }
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
});
$("sign-out").addEventListener("click", () => signOut("Signed out."));
$("site").addEventListener("change", (e) => chooseSite(e.target.value));
for (const id of ["date_from", "date_to"]) $(id).addEventListener("change", datesChanged);
for (const id of ["export_type", "format", "advanced"]) $(id).addEventListener("change", staleEstimate);
for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => setRange(button.dataset.range));
}
$("filter-rows").addEventListener("input", staleEstimate);
$("filter-rows").addEventListener("change", staleEstimate);
$("add-filter").addEventListener("click", () => addFilterRow().querySelector(".filter-value").focus());
$("estimate").addEventListener("click", () => estimate());
$("export-form").addEventListener("submit", create);
$("refresh").addEventListener("click", loadJobs);
for (const id of ["create-title", "jobs-title"]) $(id).setAttribute("tabindex", "-1");

if (session.key) {
  signIn(session.key).catch((err) => signOut(err.message));
}
