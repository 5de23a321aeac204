// The price source, as the stream's `event: source` tells it (gateway/notices.py):
// which source, whether it produces, and what "Change %" is measured from.
"use strict";

const SOURCE_NAMES = {
  simulator: "simulator",
  "massive-rest": "Massive REST",
  "massive-websocket": "Massive websocket",
};

// Each state: the words on the pill, and its look (ok | simulated | quiet | bad | wait).
function sourceLabel(info) {
  const name = SOURCE_NAMES[info.source] || "price source";
  switch (info.state) {
    case "ok":
      if (info.source === "simulator") return ["simulated prices", "simulated"];
      return [`${name} · ${info.feed || "live"}`, "ok"];
    case "market_closed":
      return [`market closed — last trade ${tradeTime(info.last_trade)}`, "quiet"];
    case "unreachable": return ["source unreachable", "bad"];
    case "auth_rejected": return ["key rejected", "bad"];
    case "rate_limited": return ["rate limited by Massive", "bad"];
    case "starting":
    case "connecting": return [`connecting to ${name}…`, "wait"];
    case "no_producer": return ["no producer running", "bad"];
    case "stopped": return ["source stopped", "bad"];
    default: return ["source error", "bad"];
  }
}

function tradeTime(ts) {
  if (typeof ts !== "number" || !(ts > 0)) return "unknown";
  const at = new Date(ts * 1000);
  const hm = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const sameDay = at.toDateString() === new Date().toDateString();
  return sameDay ? hm : `${at.toLocaleDateString([], { weekday: "short" })} ${hm}`;
}

const REFERENCE_TEXT = {
  "previous close": "since the previous close",
  "first price of the UTC day": "since the first simulated price of the UTC day",
  "first trade of the UTC day": "since the first trade of the UTC day",
};

function showSource(info) {
  if (!info || typeof info !== "object") return;
  const [text, look] = sourceLabel(info);
  const pill = document.getElementById("source");
  pill.hidden = false;
  pill.dataset.look = look;
  pill.dataset.state = info.state || "";
  document.getElementById("source-text").textContent = text;
  const name = SOURCE_NAMES[info.source] || "unknown source";
  pill.title = info.detail ? `${name}: ${info.detail}` : name;
  const since = REFERENCE_TEXT[info.reference];
  const head = document.getElementById("change-head");
  head.title = since ? `Change ${since}` : "Change since the day's reference";
  const simulated = info.source === "simulator";
  const note = [simulated ? "Simulated prices (a random walk), not market data." : "",
    since ? `Change % ${since}.` : ""].join(" ").trim();
  const box = document.getElementById("source-note");
  box.textContent = note;
  box.hidden = note === "";
  document.body.dataset.simulated = simulated ? "yes" : "no";
}

window.pricefeedShowSource = showSource;
