// The console's one script: SLA countdowns, the board's refresh, confirmations. No framework, no CDN.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// <span class="countdown" data-due="ISO" data-started="ISO"> shows the time left (or over) and is coloured at
// 50 %, 75 % and 100 % of the target (DOMAIN.md's clocks: warning at 75 %, breach at 100 %).
function tickCountdowns(root) {
  const now = Date.now();
  for (const el of (root || document).querySelectorAll(".countdown[data-due]")) {
    const due = Date.parse(el.dataset.due);
    const started = Date.parse(el.dataset.started || el.dataset.due);
    if (el.dataset.paused === "1") { el.textContent = "已暂停"; continue; }
    const left = Math.round((due - now) / 1000);
    const abs = Math.abs(left);
    const h = Math.floor(abs / 3600), m = Math.floor((abs % 3600) / 60), s = abs % 60;
    const text = (h ? h + "小时" : "") + m + "分" + (h ? "" : s + "秒");
    el.textContent = left >= 0 ? "剩 " + text : "超时 " + text;
    const used = due > started ? (now - started) / (due - started) : 1;
    el.classList.remove("sla-ok", "sla-half", "sla-warn", "sla-late");
    el.classList.add(used >= 1 ? "sla-late" : used >= 0.75 ? "sla-warn" : used >= 0.5 ? "sla-half" : "sla-ok");
    el.dataset.level = used >= 1 ? "late" : used >= 0.75 ? "warn" : used >= 0.5 ? "half" : "ok";
  }
}

// <tbody data-refresh="URL" data-every="10"> is replaced by the rows that URL renders, every N seconds.
function startRefresh() {
  for (const el of document.querySelectorAll("[data-refresh]")) {
    const every = Math.max(2, Number(el.dataset.every || 10)) * 1000;
    setInterval(async () => {
      try {
        const response = await fetch(el.dataset.refresh, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
        if (response.redirected) { window.location.reload(); return; }  // signed out: to the login page
        if (!response.ok) return;
        el.innerHTML = await response.text();
        el.dataset.refreshedAt = new Date().toISOString();
        tickCountdowns(el);
      } catch (e) { /* offline for a moment: the next round tries again */ }
    }, every);
  }
}

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// A long-running form (the day planner): say so on its button, and do not let it be sent twice.
document.addEventListener("submit", (event) => {
  if (event.defaultPrevented) return;
  const busy = event.target.querySelector("button[data-busy]");
  if (busy) { busy.textContent = busy.dataset.busy; busy.disabled = true; }
});

document.addEventListener("DOMContentLoaded", () => {
  tickCountdowns();
  setInterval(tickCountdowns, 1000);
  startRefresh();
});

window.dispatchConsole = { csrf, tickCountdowns };
