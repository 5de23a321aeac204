// pricefeed's live page. No build step, no dependency, nothing from another host.
//
// The watchlist comes from the REST API when the stream opens, then from the stream's
// `watchlist` events; prices come from the stream, the source's state from its `source`
// events (source.js). The connection
// dot follows EventSource's own reconnection: green while open, yellow while the browser
// retries, red once it has been failing for DOWN_AFTER_MS (or the browser gave up).
//
// Every event id is <epoch>-<position>-<previous position> (README "Resume and
// continuity"): an event whose previous position is not the last one we saw is a gap, and
// we reconnect from our last id to be made whole. `event: reset` means our state belongs
// to another dataset: we drop it, take the snapshot that follows and say "resynced".
"use strict";

const STREAM_URL = "/api/stream/prices?events=source,watchlist";
const WATCHLIST_URL = "/api/watchlist";
const SPARK_POINTS = 120;       // prices kept per ticker for the sparkline
const DOWN_AFTER_MS = 3000;     // retrying this long without success shows "down"
const REOPEN_MAX_MS = 10000;    // backoff cap when the browser has given up (CLOSED)
const RESYNCED_NOTE_MS = 5000;  // how long the "resynced" note stays up

const state = {
  rows: new Map(),        // ticker -> {tr, priceCell, changeCell, line, history: number[]}
  latest: new Map(),      // ticker -> last PriceUpdate seen on the stream
  source: null,
  downTimer: null,
  failingSince: null,     // Date.now() of the first error since the stream was last open
  reopenTimer: null,
  reopenDelay: 1000,
  lastId: null,           // the id of the last event applied: where we resume from
  position: null,         // its position part
  resyncedTimer: null,
};

const $ = (id) => document.getElementById(id);

// ---------- formatting ----------
const priceFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function formatPercent(value) {
  const digits = Math.abs(value) >= 1 ? 2 : 3;
  const sign = value > 0 ? "+" : value < 0 ? "−" : "";
  return `${sign}${Math.abs(value).toFixed(digits)}%`;
}

// ---------- connection status ----------
const statusLog = [];             // every state shown, in order (read by the browser test)
window.pricefeedStatusLog = statusLog;

function setStatus(kind, text) {
  const box = $("status");
  if (box.dataset.state !== kind) statusLog.push(kind);
  box.dataset.state = kind;           // connected | reconnecting | down | connecting
  document.body.dataset.state = kind;
  $("status-text").textContent = text;
}

function clearTimer(name) {
  if (state[name] !== null) {
    clearTimeout(state[name]);
    state[name] = null;
  }
}

function openStream() {
  clearTimer("reopenTimer");
  if (state.source) state.source.close();
  const url = state.lastId ? `${STREAM_URL}&last_event_id=${encodeURIComponent(state.lastId)}` : STREAM_URL;
  const source = new EventSource(url);
  state.source = source;
  source.onopen = () => {
    clearTimer("downTimer");
    state.failingSince = null;
    state.reopenDelay = 1000;
    setStatus("connected", "connected");   // the source pill says whether prices flow
    loadWatchlist();                  // catch up on changes made while we were away
  };
  source.onmessage = (event) => onEvent(event);
  source.addEventListener("reset", onReset);
  source.addEventListener("source", (event) => onNamed(event, window.pricefeedShowSource));
  source.addEventListener("watchlist", (event) => onNamed(event, (w) => applyWatchlist(w.tickers)));
  source.onerror = () => onStreamError(source);
  window.pricefeedAccess?.watch(source);    // access.js: refused, expired, delayed
}

// ---------- continuity ----------
function onEvent(event) {
  const parts = (event.lastEventId || "").split("-");
  if (parts.length === 3) {
    const [, position, previous] = parts;
    if (previous !== "0" && state.position !== null && previous !== state.position) {
      console.warn(`pricefeed: gap after ${state.position} (event follows ${previous}); resuming`);
      openStream();                   // resume from our last id: the server fills the gap
      return;
    }
    state.lastId = event.lastEventId;
    state.position = position;
  }
  onPrices(event.data);
}

function onReset() {
  state.latest.clear();               // another dataset: nothing we hold is comparable
  state.position = null;
  for (const row of state.rows.values()) {
    row.history = [];
    drawSparkline(row);
  }
  const note = $("resynced");
  note.hidden = false;
  clearTimer("resyncedTimer");
  state.resyncedTimer = setTimeout(() => { note.hidden = true; state.resyncedTimer = null; },
    RESYNCED_NOTE_MS);
  window.pricefeedResets = (window.pricefeedResets || 0) + 1;
}

function onNamed(event, show) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (err) {
    console.warn(`pricefeed: ignoring a malformed ${event.type} event`, err);
    return;
  }
  show(data);
}

function onStreamError(source) {
  if (source !== state.source) return;
  if (state.failingSince === null) state.failingSince = Date.now();
  if (source.readyState === EventSource.CLOSED) {
    // The browser gave up (e.g. a 503 while the gateway shuts down): reopen ourselves.
    state.reopenTimer = setTimeout(openStream, state.reopenDelay);
    state.reopenDelay = Math.min(state.reopenDelay * 2, REOPEN_MAX_MS);
  }
  // Otherwise (CONNECTING) the browser retries on its own, as the server asked (retry: 1000).
  showFailing();
  if (state.downTimer === null) {
    state.downTimer = setTimeout(() => {
      state.downTimer = null;
      if (state.failingSince !== null) showFailing();
    }, DOWN_AFTER_MS);
  }
}

function showFailing() {
  // Yellow while the outage is young, red once it has lasted DOWN_AFTER_MS; never back
  // to yellow until a connection has opened again.
  if (Date.now() - state.failingSince >= DOWN_AFTER_MS) {
    setStatus("down", "disconnected — retrying");
  } else {
    setStatus("reconnecting", "reconnecting…");
  }
}

// ---------- prices ----------
function onPrices(data) {
  let prices;
  try {
    prices = JSON.parse(data);
  } catch (err) {
    console.warn("pricefeed: ignoring a malformed event", err);
    return;
  }
  for (const [ticker, update] of Object.entries(prices)) {
    if (!update || typeof update.price !== "number") continue;
    const previous = state.latest.get(ticker);
    if (previous && previous.seq >= update.seq) continue;
    state.latest.set(ticker, update);
    const row = state.rows.get(ticker);
    if (row) showPrice(row, update, previous);
  }
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function showPrice(row, update, previous) {
  const shown = row.priceCell.textContent;
  const text = priceFmt.format(update.price);
  row.priceCell.textContent = text;
  showDayChange(row.changeCell, update);
  const last = row.history.length ? row.history[row.history.length - 1] : null;
  row.history.push(update.price);
  if (row.history.length > SPARK_POINTS) row.history.shift();
  drawSparkline(row);
  // Only a price that changed on screen flashes, and only its own cell.
  const moved = previous ? update.price - previous.price : last === null ? 0 : update.price - last;
  if (moved !== 0 && text !== shown) flash(row.priceCell, moved > 0 ? "flash-up" : "flash-down");
}

// "Change %" is the change since the day's reference (README, "The Redis contract"); an
// update from a producer older than that field has none, and shows a dash.
function showDayChange(cell, update) {
  const pct = update.day_change_percent;
  if (typeof pct !== "number") {
    cell.textContent = "—";
    delete cell.dataset.direction;
    return;
  }
  cell.textContent = formatPercent(pct);
  cell.dataset.direction = pct > 0 ? "up" : pct < 0 ? "down" : "flat";
  cell.title = `since ${priceFmt.format(update.reference_price)}`;
}

function flash(el, cls) {
  el.classList.remove("flash-up", "flash-down");
  void el.offsetWidth;                // restart the animation
  el.classList.add(cls);
}

function drawSparkline(row) {
  const points = row.history;
  if (points.length < 2) {
    row.line.setAttribute("points", "");
    return;
  }
  const lo = Math.min(...points);
  const hi = Math.max(...points);
  const span = hi - lo || 1;
  const step = 120 / (points.length - 1);   // the line always spans the whole cell
  const coords = points.map((p, i) =>
    `${(i * step).toFixed(1)},${(26 - ((p - lo) / span) * 24).toFixed(1)}`);
  row.line.setAttribute("points", coords.join(" "));
  row.line.dataset.trend = points[points.length - 1] >= points[0] ? "up" : "down";
}

// ---------- rows ----------
function addRow(ticker, price) {
  if (state.rows.has(ticker)) return;
  const tr = $("row-template").content.firstElementChild.cloneNode(true);
  tr.dataset.ticker = ticker;
  tr.querySelector(".ticker").textContent = ticker;
  tr.querySelector(".remove").addEventListener("click", () => removeTicker(ticker));
  tr.addEventListener("animationend", (e) => e.target.classList.remove("flash-up", "flash-down", "found"));
  const row = {
    tr,
    priceCell: tr.querySelector(".price"),
    changeCell: tr.querySelector(".change"),
    line: tr.querySelector("polyline"),
    history: [],
  };
  state.rows.set(ticker, row);
  insertSorted(tr, ticker);
  if (typeof prefillSparkline === "function") prefillSparkline(row, ticker);   // chart.js
  const known = state.latest.get(ticker);
  if (known) showPrice(row, known, null);
  else if (typeof price === "number") row.priceCell.textContent = priceFmt.format(price);
  $("empty").hidden = true;
}

function insertSorted(tr, ticker) {
  const body = $("rows");
  const after = [...body.children].find((el) => el.dataset.ticker > ticker);
  body.insertBefore(tr, after || null);
}

function dropRow(ticker) {
  const row = state.rows.get(ticker);
  if (!row) return;
  row.tr.remove();
  state.rows.delete(ticker);
  $("empty").hidden = state.rows.size > 0;
}

// ---------- REST ----------
async function errorMessage(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    return `${response.status} ${response.statusText}`.trim();
  }
  const detail = body && (body.detail ?? body.error ?? body.message);
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  if (detail && typeof detail === "object") return detail.message || JSON.stringify(detail);
  return `${response.status} ${response.statusText}`.trim();
}

function authHeaders() {
  const token = sessionStorage.getItem("pricefeed-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function writeRequest(method, url, body) {
  const send = () => fetch(url, {
    method,
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let response = await send();
  if (response.status === 401) {
    const token = window.prompt("This gateway needs an API token for watchlist changes:");
    if (token) {
      sessionStorage.setItem("pricefeed-token", token.trim());
      response = await send();
    }
  }
  return response;
}

async function loadWatchlist() {
  try {
    const response = await fetch(WATCHLIST_URL);
    if (!response.ok) return;
    const items = await response.json();
    applyWatchlist(items.map((item) => item.ticker), items);
  } catch (_) {
    // The stream's status dot already tells the user the gateway is unreachable.
  }
}

// The whole watchlist, from the REST API or a `watchlist` event: rows follow it exactly.
function applyWatchlist(tickers, items = []) {
  if (!Array.isArray(tickers)) return;
  const wanted = new Set(tickers);
  const prices = new Map(items.map((item) => [item.ticker, item.price]));
  for (const ticker of tickers) addRow(ticker, prices.get(ticker));
  for (const ticker of [...state.rows.keys()]) if (!wanted.has(ticker)) dropRow(ticker);
  $("empty").hidden = state.rows.size > 0;
}

function showFormError(text) {
  $("form-error").textContent = text;
  if (text) $("form-note").textContent = "";
}

function showFormNote(text) {
  $("form-note").textContent = text;
  if (text) $("form-error").textContent = "";
}

// Client-side checks mirror the server's rule only to explain; the server decides.
function checkBeforeAdd(raw) {
  const symbol = raw.trim().toUpperCase();
  if (!symbol) return { error: "type a ticker symbol, e.g. PYPL" };
  const row = state.rows.get(symbol);
  if (row) return { known: symbol, row };
  return { symbol };
}

async function onAdd(event) {
  event.preventDefault();
  const input = $("ticker-input");
  showFormError("");
  showFormNote("");
  const check = checkBeforeAdd(input.value);
  if (check.error) {
    showFormError(check.error);
    return;
  }
  if (check.known) {
    showFormNote(`${check.known} is already on the watchlist`);
    check.row.tr.scrollIntoView({ block: "nearest" });
    flash(check.row.tr, "found");
    input.select();
    return;
  }
  $("add-button").disabled = true;
  try {
    const added = await addTicker(input.value);
    if (added) input.value = "";
  } finally {
    $("add-button").disabled = false;
  }
}

// POST a ticker; true when it is on the watchlist afterwards (errors are shown).
async function addTicker(raw) {
  try {
    const response = await writeRequest("POST", WATCHLIST_URL, { ticker: raw });
    if (!response.ok) {
      showFormError(await errorMessage(response));
      return false;
    }
    const item = await response.json();
    addRow(item.ticker, item.price);
    return true;
  } catch (_) {
    showFormError("the gateway cannot be reached");
    return false;
  }
}

async function removeTicker(ticker) {
  showFormError("");
  showFormNote("");
  try {
    const response = await writeRequest("DELETE", `${WATCHLIST_URL}/${encodeURIComponent(ticker)}`);
    if (response.ok || response.status === 404) {
      dropRow(ticker);
      if (response.ok) window.pricefeedOfferUndo(ticker, () => addTicker(ticker));
    } else {
      showFormError(await errorMessage(response));
    }
  } catch (_) {
    showFormError("the gateway cannot be reached");
  }
}

// ---------- start ----------
document.addEventListener("DOMContentLoaded", () => {
  $("add-form").addEventListener("submit", onAdd);
  loadWatchlist();
  openStream();
});
