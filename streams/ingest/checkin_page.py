"""The check-in page: one self-contained, server-rendered HTML page with a little JavaScript.

Mobile first (readable at 360 px), no build step, nothing fetched from elsewhere. The token comes in
the link's fragment and is kept in the phone's storage. Accounts are sorted by distance on the
phone: the position read for that never leaves it. A tap reads a fresh position and queues the
check-in (with its time) in the phone's storage; the queue is sent at once, or when the network is
back, and the page says what is still waiting.
"""

from __future__ import annotations

from typing import Final

CHECKIN_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Check in - salespulse</title>
<style>
  :root { color-scheme: light; --ink: #111; --muted: #4a4a4a; --line: #c8c8c8; --ok: #0b6b2e;
          --warn: #8a1c00; --accent: #0a4fa8; --bg: #fff; --card: #f4f6f9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 17px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: var(--bg); }
  header { background: var(--accent); color: #fff; padding: 12px 16px; }
  header h1 { margin: 0; font-size: 1.25rem; }
  header p { margin: 2px 0 0; font-size: .95rem; }
  main { padding: 12px 16px 24px; max-width: 40rem; margin: 0 auto; }
  .notice { font-size: .9rem; color: var(--muted); border-left: 4px solid var(--line);
            padding: 4px 10px; margin: 8px 0 12px; }
  #status { min-height: 1.5em; font-weight: 600; margin: 8px 0; padding: 10px 12px; border-radius: 8px; }
  #status.ok { background: #e4f4e9; color: var(--ok); }
  #status.warn { background: #fdebe5; color: var(--warn); }
  #status.info { background: var(--card); color: var(--ink); }
  #pending { font-size: .95rem; color: var(--warn); font-weight: 600; }
  ul { list-style: none; margin: 0; padding: 0; }
  li { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
       padding: 12px; margin: 0 0 10px; }
  .name { font-weight: 700; font-size: 1.05rem; }
  .meta { color: var(--muted); font-size: .92rem; }
  .result { font-size: .95rem; font-weight: 600; margin-top: 4px; }
  .result.verified { color: var(--ok); }
  .result.out_of_range, .result.rejected { color: var(--warn); }
  button { font: inherit; font-weight: 700; min-height: 48px; min-width: 48px; width: 100%;
           margin-top: 8px; border-radius: 8px; border: 2px solid var(--accent); cursor: pointer; }
  button.in { background: var(--accent); color: #fff; }
  button.out { background: #fff; color: var(--accent); }
  button:focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }
  /* Not faded: a disabled button stays readable (dark on grey) and says why it is off. */
  button:disabled { background: #e3e6ea; color: #333; border-color: #8c949e; cursor: not-allowed; }
</style>
</head>
<body>
<header>
  <h1>Field check-in</h1>
  <p id="who">salespulse</p>
</header>
<main>
  <p class="notice" id="privacy">Your location is used only at check-in: it is read when you open this page,
  to sort your accounts on this phone, and sent only with a check-in or check-out. It is not tracked
  in between.</p>
  <div id="status" role="status" aria-live="polite" class="info">Loading your accounts...</div>
  <p id="pending" aria-live="polite"></p>
  <h2 id="accounts-title" style="font-size:1.1rem;margin:12px 0 8px">Your accounts, nearest first</h2>
  <ul id="accounts" aria-labelledby="accounts-title"></ul>
</main>
<script>
(function () {
  "use strict";
  var KEY = "salespulse.checkin.";
  var store = window.localStorage;
  var here = null, accounts = [], results = {}, sending = false;

  function read(name, fallback) {
    try { var v = store.getItem(KEY + name); return v === null ? fallback : JSON.parse(v); }
    catch (e) { return fallback; }
  }
  function write(name, value) { store.setItem(KEY + name, JSON.stringify(value)); }

  if (location.hash.indexOf("#token=") === 0) {
    write("token", decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname);
  }
  var token = read("token", null);
  var statusBox = document.getElementById("status");

  function say(text, kind) { statusBox.textContent = text; statusBox.className = kind || "info"; }
  function headers() { return {"Authorization": "Bearer " + token, "Content-Type": "application/json"}; }
  function distance(a, b) {
    var r = 6371008.8, p1 = a.lat * Math.PI / 180, p2 = b.lat * Math.PI / 180;
    var dp = p2 - p1, dl = (b.lon - a.lon) * Math.PI / 180;
    var h = Math.pow(Math.sin(dp / 2), 2) + Math.cos(p1) * Math.cos(p2) * Math.pow(Math.sin(dl / 2), 2);
    return 2 * r * Math.asin(Math.sqrt(Math.min(1, h)));
  }
  function metres(m) { return m < 1000 ? Math.round(m) + " m" : (m / 1000).toFixed(1) + " km"; }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }
  function describe(r, name) {
    var verb = r.action === "check_out" ? "Checked out of " : "Checked in at ";
    if (r.status === "verified") return verb + name + ": verified, " + metres(r.distance_m) + " away.";
    if (r.status === "out_of_range")
      return verb + name + ": out of range, " + metres(r.distance_m) + " away (limit " + metres(r.radius_m) + ").";
    if (r.status === "unlocated") return verb + name + ": saved, but the position could not be verified.";
    return "Not saved (" + name + "): " + (r.detail || "rejected") + ".";
  }

  function render() {
    var list = document.getElementById("accounts");
    var open = read("open", null);
    var rows = accounts.map(function (a) {
      var d = (here && a.lat !== null && a.lon !== null) ? distance(here, a) : null;
      return {a: a, d: d};
    });
    rows.sort(function (x, y) {
      if (x.d === null) return y.d === null ? x.a.name.localeCompare(y.a.name) : 1;
      if (y.d === null) return -1;
      return x.d - y.d;
    });
    list.textContent = "";
    rows.forEach(function (row) {
      var a = row.a, li = document.createElement("li");
      var name = document.createElement("div"); name.className = "name"; name.textContent = a.name;
      var meta = document.createElement("div"); meta.className = "meta";
      meta.textContent = (row.d === null ? "distance unknown" : metres(row.d) + " away") +
        " \\u00b7 check-in radius " + metres(a.radius_m);
      li.appendChild(name); li.appendChild(meta);
      var last = results[a.account_id];
      if (last) {
        var res = document.createElement("div");
        res.className = "result " + last.status; res.textContent = describe(last, a.name);
        li.appendChild(res);
      }
      var button = document.createElement("button");
      var isOpen = open && open.account_id === a.account_id;
      button.className = isOpen ? "out" : "in";
      button.textContent = isOpen ? "Check out" : (open ? "Check in (check out first)" : "Check in");
      button.setAttribute("aria-label", (isOpen ? "Check out of " : "Check in at ") + a.name);
      button.disabled = !!(open && !isOpen);
      button.addEventListener("click", function () { tap(a, isOpen ? "check_out" : "check_in", button); });
      li.appendChild(button);
      list.appendChild(li);
    });
    if (!accounts.length) list.innerHTML = "<li>No accounts are assigned to you yet.</li>";
    showPending();
  }

  function showPending() {
    var queue = read("queue", []);
    document.getElementById("pending").textContent = queue.length
      ? queue.length + (queue.length === 1 ? " check-in is" : " check-ins are") +
        " waiting to be sent; they keep the time you tapped and go out as soon as there is a network."
      : "";
  }

  function position() {
    return new Promise(function (resolve) {
      if (!navigator.geolocation) return resolve(null);
      navigator.geolocation.getCurrentPosition(function (p) {
        resolve({lat: p.coords.latitude, lon: p.coords.longitude, accuracy: p.coords.accuracy});
      }, function () { resolve(null); }, {enableHighAccuracy: true, maximumAge: 0, timeout: 20000});
    });
  }

  function tap(account, action, button) {
    button.disabled = true;
    say(action === "check_in" ? "Reading your position..." : "Checking out...", "info");
    position().then(function (p) {
      var item = {client_id: newId(), action: action, account_id: account.account_id,
                  occurred_at: new Date().toISOString()};
      if (p) { item.lat = p.lat; item.lon = p.lon; item.accuracy_m = Math.round(p.accuracy * 10) / 10;
               here = {lat: p.lat, lon: p.lon}; }
      if (action === "check_in") write("open", {account_id: account.account_id, visit_id: "checkin:" + item.client_id});
      else { item.visit_id = (read("open", {}) || {}).visit_id; write("open", null); }
      var queue = read("queue", []); queue.push(item); write("queue", queue);
      if (!p) say("No position: the " + action.replace("_", "-") + " is saved without it.", "warn");
      render(); flush();
    });
  }

  function flush() {
    var queue = read("queue", []);
    if (!queue.length || sending || !token) { showPending(); return; }
    sending = true;
    fetch("/v1/checkins", {method: "POST", headers: headers(), body: JSON.stringify(queue)})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          say("This check-in link is not valid any more; ask your manager for a new one.", "warn");
          return null;
        }
        if (!response.ok) { say("The server is busy; your check-ins are kept and will be sent.", "warn"); return null; }
        return response.json();
      })
      .then(function (answers) {
        if (!answers) return;
        var done = {}, last = null;
        answers.forEach(function (r) { done[r.client_id] = true; results[r.account_id] = r; last = r; });
        write("queue", read("queue", []).filter(function (q) { return !done[q.client_id]; }));
        if (last) {
          var name = (accounts.filter(function (a) { return a.account_id === last.account_id; })[0] || {}).name || last.account_id;
          say(describe(last, name), last.status === "verified" ? "ok" : (last.status === "unlocated" ? "info" : "warn"));
        }
        render();
      })
      .catch(function () { say("Offline: your check-in is saved on this phone and will be sent later.", "warn"); })
      .then(function () { sending = false; showPending(); });
  }

  function loadAccounts() {
    if (!token) { say("Open your personal check-in link (from your manager) on this phone.", "warn"); return; }
    fetch("/v1/checkin/accounts", {headers: headers()})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) throw new Error("link");
        return response.json();
      })
      .then(function (data) {
        accounts = data.accounts; write("accounts", data);
        document.getElementById("who").textContent = "Signed in as " + data.rep_id;
        say(accounts.length ? "Tap Check in when you arrive, Check out when you leave." : "No accounts yet.", "info");
        render(); flush();
      })
      .catch(function (e) {
        if (e && e.message === "link") { say("This check-in link is not valid any more; ask for a new one.", "warn"); return; }
        var cached = read("accounts", null);
        if (cached) { accounts = cached.accounts; document.getElementById("who").textContent = "Signed in as " + cached.rep_id; }
        say("Offline: showing your saved accounts; check-ins will be sent later.", "warn");
        render();
      });
  }

  position().then(function (p) { if (p) { here = {lat: p.lat, lon: p.lon}; render(); } });
  loadAccounts();
  window.addEventListener("online", flush);
  setInterval(flush, 10000);
})();
</script>
</body>
</html>
"""
