// A removal changes the watchlist of everyone watching: say so, and offer an undo.
"use strict";

const UNDO_MS = 8000;
let undoTimer = null;

function offerUndo(ticker, restore) {
  const bar = document.getElementById("undo");
  document.getElementById("undo-text").textContent =
    `Removed ${ticker} from the watchlist, for everyone watching it.`;
  const button = document.getElementById("undo-button");
  button.disabled = false;
  button.onclick = async () => {
    button.disabled = true;
    if (await restore()) hideUndo();
    else button.disabled = false;
  };
  bar.hidden = false;
  clearTimeout(undoTimer);
  undoTimer = setTimeout(hideUndo, UNDO_MS);
}

function hideUndo() {
  clearTimeout(undoTimer);
  undoTimer = null;
  document.getElementById("undo").hidden = true;
}

window.pricefeedOfferUndo = offerUndo;
