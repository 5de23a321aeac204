// pricefeed's main chart and the sparklines' history, from the bars (README "Bars").
//
// Clicking a ticker's row opens the chart: candles of 1 min bars or a line of 1 s closes,
// backfilled from GET /api/bars, then live from the SSE stream's `event: bar` (its own
// stream, narrowed to that ticker). Drawn by the vendored TradingView Lightweight Charts
// (static/vendor/), which gives the time and price axes and the crosshair.
"use strict";

const BARS_URL = "/api/bars/";
const CHART_BARS = { "1m": 300, "1s": 900 };   // backfill: 5 h of minutes, 15 min of seconds
const CHART_COLORS = { up: "#2fbf71", down: "#f0524d", line: "#4c9aff", text: "#8b98a7", grid: "#1e2732" };

const chart = {
  ticker: null,
  interval: "1m",
  api: null,          // the LightweightCharts chart
  series: null,
  source: null,       // the chart's EventSource
  bars: new Map(),    // time -> bar, what the chart holds (for the crosshair legend)
  updates: 0,         // live bars drawn since the chart opened (read by the browser test)
  generation: 0,      // a newer open() makes older fetches moot
};
window.pricefeedChart = chart;

const chartPriceFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function barsUrl(ticker, interval, limit) {
  return `${BARS_URL}${encodeURIComponent(ticker)}?interval=${interval}&limit=${limit}`;
}

// ---------- sparklines start full ----------
// Called by app.js for each new row: the last 1 s closes go in front of what has arrived.
async function prefillSparkline(row, ticker) {
  try {
    const response = await fetch(barsUrl(ticker, "1s", SPARK_POINTS));
    if (!response.ok) return;
    const closes = (await response.json()).bars.filter((b) => !b.partial).map((b) => b.c);
    row.history = closes.concat(row.history).slice(-SPARK_POINTS);
    row.prefilled = closes.length;
    drawSparkline(row);
  } catch (_) {
    // The sparkline fills from the stream instead.
  }
}

// ---------- the chart ----------
function ensureChart() {
  if (chart.api) return;
  const box = document.getElementById("chart");
  chart.api = LightweightCharts.createChart(box, {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: CHART_COLORS.text, attributionLogo: false },
    grid: { vertLines: { color: CHART_COLORS.grid }, horzLines: { color: CHART_COLORS.grid } },
    rightPriceScale: { borderColor: CHART_COLORS.grid },
    timeScale: { borderColor: CHART_COLORS.grid, timeVisible: true, secondsVisible: true },
    crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
    localization: { priceFormatter: (p) => chartPriceFmt.format(p) },
  });
  chart.api.subscribeCrosshairMove((param) => showLegend(param.time));
}

function makeSeries(interval) {
  if (chart.series) chart.api.removeSeries(chart.series);
  chart.series = interval === "1m"
    ? chart.api.addCandlestickSeries({
      upColor: CHART_COLORS.up, downColor: CHART_COLORS.down, borderVisible: false,
      wickUpColor: CHART_COLORS.up, wickDownColor: CHART_COLORS.down,
    })
    : chart.api.addLineSeries({ color: CHART_COLORS.line, lineWidth: 2 });
}

function point(bar) {
  return chart.interval === "1m"
    ? { time: bar.t, open: bar.o, high: bar.h, low: bar.l, close: bar.c }
    : { time: bar.t, value: bar.c };
}

async function openChart(ticker, interval) {
  const generation = ++chart.generation;
  chart.ticker = ticker;
  chart.interval = interval;
  chart.bars = new Map();
  chart.updates = 0;
  chart.backfilled = false;
  const panel = document.getElementById("chart-panel");
  panel.hidden = false;
  panel.dataset.interval = interval;
  document.getElementById("chart-ticker").textContent = ticker;
  for (const button of panel.querySelectorAll("[data-interval-choice]")) {
    button.setAttribute("aria-pressed", String(button.dataset.intervalChoice === interval));
  }
  for (const tr of document.querySelectorAll("#rows tr")) {
    tr.classList.toggle("selected", tr.dataset.ticker === ticker);
  }
  ensureChart();
  makeSeries(interval);
  closeChartStream();
  // Stream first, then the backfill: a close that lands in between is not lost.
  const pending = [];
  openChartStream(ticker, interval, (bar) => (chart.backfilled ? drawBar(bar) : pending.push(bar)));
  let bars = [];
  try {
    const response = await fetch(barsUrl(ticker, interval, CHART_BARS[interval]));
    if (response.ok) bars = (await response.json()).bars;
  } catch (_) {
    // Empty until the stream brings bars.
  }
  if (generation !== chart.generation) return;
  for (const bar of bars) chart.bars.set(bar.t, bar);
  chart.series.setData(bars.map(point));
  chart.backfilled = true;
  chart.backfillCount = bars.length;
  for (const bar of pending) drawBar(bar);
  // A short history spreads over the width (at most 24 px a bar), a long one shows its
  // newest part; live bars then push the view along.
  const width = document.getElementById("chart").clientWidth || 800;
  const spacing = Math.max(4, Math.min(24, width / Math.max(bars.length + 5, 30)));
  chart.api.timeScale().applyOptions({ barSpacing: spacing });
  chart.api.timeScale().scrollToRealTime();
  showLegend(null);
}

function openChartStream(ticker, interval, onBar) {
  const url = `/api/stream/prices?tickers=${encodeURIComponent(ticker)}&bars=${interval}`;
  const source = new EventSource(url);
  chart.source = source;
  source.addEventListener("bar", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    const bar = message && message.interval === interval && message.bars && message.bars[ticker];
    if (bar && typeof bar.t === "number") onBar(bar);
  });
}

function closeChartStream() {
  if (chart.source) chart.source.close();
  chart.source = null;
}

function drawBar(bar) {
  const last = chart.series.data().at(-1);
  if (last && bar.t < last.time) return;      // older than what is drawn: already there
  chart.bars.set(bar.t, bar);
  chart.series.update(point(bar));
  chart.updates += 1;
  showLegend(null);
}

function showLegend(time) {
  const bar = time !== null && time !== undefined ? chart.bars.get(time) : [...chart.bars.values()].at(-1);
  const legend = document.getElementById("chart-legend");
  if (!bar) {
    legend.textContent = "no bars yet";
    return;
  }
  const when = new Date(bar.t * 1000).toISOString().slice(11, chart.interval === "1m" ? 16 : 19);
  const f = (p) => chartPriceFmt.format(p);
  legend.textContent = `${when} UTC  O ${f(bar.o)}  H ${f(bar.h)}  L ${f(bar.l)}  C ${f(bar.c)}  ` +
    `${bar.n} updates${bar.v === null ? "" : `  vol ${bar.v}`}${bar.partial ? "  (forming)" : ""}`;
}

function closeChart() {
  chart.generation += 1;
  closeChartStream();
  chart.ticker = null;
  document.getElementById("chart-panel").hidden = true;
  for (const tr of document.querySelectorAll("#rows tr.selected")) tr.classList.remove("selected");
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("rows").addEventListener("click", (event) => {
    if (event.target.closest("button")) return;   // the row's remove button
    const tr = event.target.closest("tr");
    if (tr && tr.dataset.ticker) openChart(tr.dataset.ticker, chart.interval);
  });
  for (const button of document.querySelectorAll("[data-interval-choice]")) {
    button.addEventListener("click", () => {
      if (chart.ticker) openChart(chart.ticker, button.dataset.intervalChoice);
    });
  }
  document.getElementById("chart-close").addEventListener("click", closeChart);
});
