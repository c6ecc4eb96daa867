// Refreshes the status page from GET api/status. Served as a file: the
// page's Content-Security-Policy allows no inline script.
"use strict";
(function () {
  const body = document.body;
  const every = Math.max(1, Number(body.dataset.refresh) || 5) * 1000;
  const fresh = document.getElementById("fresh");
  const search = document.getElementById("q");
  let now = Date.now();
  let timer = null;
  let busy = false;

  // Formatters: the same text as the server's (format.go).
  const dur = (s) => {
    const n = Math.max(0, Math.floor(s));
    if (n < 60) return n + " s";
    if (n < 3600) return Math.floor(n / 60) + " min";
    if (n < 86400) return Math.floor(n / 3600) + " h " + Math.floor((n % 3600) / 60) + " min";
    return Math.floor(n / 86400) + " d " + Math.floor((n % 86400) / 3600) + " h";
  };
  const ago = (t) => (t ? dur((now - Date.parse(t)) / 1000) + " ago" : "never");
  const fmt = {
    raw: (v) => (v == null ? "" : String(v)),
    int: (v) => String(v),
    rate: (r) => (r === 0 ? "0/s" : r < 10 ? String(Math.round(r * 100) / 100) + "/s" : String(Math.round(r)) + "/s"),
    bytes: (b) => {
      const u = ["B", "KiB", "MiB", "GiB", "TiB"];
      let f = b, i = 0;
      while (f >= 1024 && i < u.length - 1) { f /= 1024; i++; }
      return i === 0 ? b + " B" : Math.round(f * 10) / 10 + " " + u[i];
    },
    dur: dur,
    ago: ago,
    agoT: ago,
    text: (s) => (s ? s : "—"),
    link: (l) => {
      if (!l) return "in-process, no connection";
      const since = l.since ? " for " + dur((now - Date.parse(l.since)) / 1000) : "";
      if (l.connected) return "connected" + since;
      return "disconnected" + since + (l.last_error ? ": " + l.last_error : "");
    },
    refusals: (m) => {
      const codes = Object.keys(m || {}).sort();
      return codes.length ? codes.map((c) => c + "×" + m[c]).join(", ") : "none";
    },
    values: (vs) => (vs || []).map((v) => v.path + "=" + v.value).join(" · "),
  };

  const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);

  function spark(svg, vs) {
    vs = vs || [];
    const top = Math.max(0, ...vs);
    const step = 360 / Math.max(vs.length - 1, 1);
    const pts = vs.map((v, i) => (i * step).toFixed(1) + "," + (top > 0 ? 39 - (v / top) * 38 : 39).toFixed(1));
    svg.querySelector("polyline").setAttribute("points", pts.join(" "));
  }

  // fill sets every [data-k] under root from obj.
  function fill(root, obj) {
    for (const el of root.querySelectorAll("[data-k]")) {
      const v = get(obj, el.dataset.k);
      const f = el.dataset.f || "raw";
      if (f === "spark") spark(el, v);
      else if (f === "fill") el.value = v.max_bytes > 0 ? Math.min(v.bytes / v.max_bytes, 1) : 0;
      else if (f === "ago" && v == null && el.tagName === "SMALL") el.textContent = "";
      else el.textContent = fmt[f](v);
    }
  }

  function clone(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function render(rep) {
    now = Date.parse(rep.time);
    fill(document.querySelector("header"), rep);
    fill(document.getElementById("intake"), rep);
    fill(document.getElementById("queue"), rep);
    const cards = document.getElementById("sinks");
    for (const s of rep.sinks) {
      let card = cards.querySelector('[data-sink="' + CSS.escape(s.name) + '"]');
      if (!card) {
        card = clone("t-sink");
        card.dataset.sink = s.name;
        cards.appendChild(card);
      }
      card.className = "sink state-" + s.state;
      fill(card, s);
    }
    const rows = document.createDocumentFragment();
    for (const d of rep.devices.items) {
      const tr = clone("t-dev");
      fill(tr, d);
      rows.appendChild(tr);
    }
    document.getElementById("devices").replaceChildren(rows);
    document.getElementById("dev-count").textContent =
      rep.devices.matched + " matching of " + rep.devices.tracked + " seen";
  }

  async function refresh() {
    clearTimeout(timer);
    if (busy) return;
    busy = true;
    try {
      const q = search.value.trim();
      const res = await fetch("api/status" + (q ? "?q=" + encodeURIComponent(q) : ""), {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (!res.ok) throw new Error("HTTP " + res.status);
      render(await res.json());
      fresh.textContent = "updated " + new Date().toLocaleTimeString();
      fresh.className = "fresh ok";
    } catch (e) {
      fresh.textContent = "not updating: " + e.message;
      fresh.className = "fresh stale";
    } finally {
      busy = false;
      timer = setTimeout(refresh, every);
    }
  }

  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(refresh, 250);
  });
  refresh();
})();
