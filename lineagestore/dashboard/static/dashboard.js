// The lineagestore dashboard: draws the figures embedded in #lin-data (see lineagestore/dashboard/data.py).
// Every chart container gets a data-points attribute counted from what was drawn, so tests read the page,
// not the template. Text from the store is only ever set as textContent, never parsed as HTML.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var plots = [];
  var current = null;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function body(id) { return clear(document.querySelector("#" + id + " .body")); }

  function human(n) {
    if (n === null || n === undefined) return "–";
    var a = Math.abs(n), units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) if (a >= units[i][0]) return (n / units[i][0]).toFixed(2).replace(/\.?0+$/, "") + units[i][1];
    return (Math.round(n * 100) / 100).toString();
  }
  function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toPrecision(digits || 3); }
  function bytes(n) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function duration(s) {
    if (s === null || s === undefined) return "unknown";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    if (s < 2 * 365.25 * 86400) return (s / 86400).toFixed(1) + " days";
    return human(s / (365.25 * 86400)) + " years";
  }
  function date(t) { return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC"; }
  function figure(parent, label, value) {
    var d = el("div"); d.appendChild(el("b", {}, value)); d.appendChild(el("span", {class: "muted"}, label));
    parent.appendChild(d);
  }

  // ------------------------------------------------------------------ progress
  function drawProgress(d) {
    var b = body("progress"), g = d.goal;
    var head = d.head.name ? d.head.name + (d.head.branch ? " (" + d.head.branch.replace("refs/heads/", "") + ")" : " (detached)") : "no version yet";
    b.appendChild(el("div", {}, "Active version: " + head + " — " + human(g.trained) + " of " + human(g.goal) +
      " tokens (" + (100 * g.fraction).toPrecision(3) + "%)"));
    var bar = el("div", {class: "bar"}), fill = el("span");
    fill.style.width = Math.min(100, 100 * g.fraction) + "%";
    bar.appendChild(fill); b.appendChild(bar);
    var f = el("div", {class: "figures"});
    figure(f, "tokens to go", human(g.remaining));
    figure(f, "recent rate (last " + g.recent_versions + " versions, tokens/s of training)", g.recent_rate ? human(g.recent_rate) : "–");
    figure(f, "ETA at the recent rate", g.eta_recent ? duration(g.eta_recent.seconds) + (g.eta_recent.date ? " (" + g.eta_recent.date + ")" : "") : "unknown");
    figure(f, "calendar pace (tokens/day, first to last version)", g.calendar_rate ? human(g.calendar_rate * 86400) : "–");
    figure(f, "ETA at the calendar pace", g.eta_calendar ? duration(g.eta_calendar.seconds) + (g.eta_calendar.date ? " (" + g.eta_calendar.date + ")" : "") : "unknown");
    figure(f, "training versions on this lineage", g.versions);
    figure(f, "device-hours of training (devices × hours)", g.device_hours ? (g.device_hours < 1000 ? num(g.device_hours) : human(g.device_hours)) : "–");
    figure(f, "tokens per device-hour", g.tokens_per_device_hour ? human(g.tokens_per_device_hour) : "–");
    b.appendChild(f);
    (d.runs || []).forEach(function (r) {
      var total = r.total_steps ? " of " + r.total_steps : "";
      b.appendChild(el("p", {}, "Run " + r.name + " (" + r.status + "): step " + r.step + total + ", " + human(r.tokens_trained) +
        " tokens" + (r.output ? ", to become " + r.output : "") + (r.error ? " — " + r.error : "")));
    });
  }

  // ------------------------------------------------------------------ charts (uPlot)
  var tip = null;
  function showTip(text, x, y) {
    tip = tip || document.getElementById("tip");
    if (!text) { tip.style.display = "none"; return; }
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = Math.min(x + 14, window.innerWidth - tip.offsetWidth - 6) + "px";
    tip.style.top = (y + 14) + "px";
  }
  function countDrawn(u) {
    var n = 0;
    for (var s = 1; s < u.data.length; s++) {
      if (!u.series[s].show) continue;
      var col = u.data[s];
      for (var i = 0; i < col.length; i++) if (col[i] !== null && col[i] !== undefined) n++;
    }
    return n;
  }
  var COLORS = ["#2563eb", "#dc2626", "#16a34a"];
  // a log axis ticked at powers of ten only (at most 8 labels: every 10^k, 10^2k, ...)
  function decades(u, axis, min, max) {
    var lo = Math.floor(Math.log10(Math.max(min, 1e-300))), hi = Math.ceil(Math.log10(Math.max(max, 1e-300)));
    var step = Math.max(1, Math.ceil((hi - lo) / 8)), out = [];
    for (var k = lo; k <= hi; k += step) { var v = Math.pow(10, k); if (v >= min && v <= max) out.push(v); }
    return out;
  }
  function drawChart(c) {
    var box = clear(document.getElementById("chart-" + c.key));
    box.setAttribute("data-points", "0");
    box.setAttribute("role", "img");
    box.setAttribute("aria-label", c.title + ": " + c.x.length + " points (" + c.source + ")");
    if (!c.x.length) {
      box.appendChild(el("div", {class: "empty"}, "No points yet: " + c.source + "."));
      return;
    }
    var width = Math.max(260, box.clientWidth || 400);
    var series = [{label: c.x_label, value: function (u, v) { return v === null ? "–" : (c.x_kind === "time" ? date(v) : human(v)); }}];
    c.labels.forEach(function (label, i) {
      series.push({label: label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
        // a later series (eval loss, the trend) is sparse: its points are drawn filled and larger
        points: i > 0 ? {show: true, size: 7, fill: COLORS[i % COLORS.length]} : {show: c.x.length < 80, size: 5},
        value: function (u, v) { return v === null ? "–" : human(v); }});
    });
    var opts = {
      width: width, height: 240,
      // one x value: a day either side (uPlot's own pad for seconds is years), or 0 to it
      scales: {x: {time: c.x_kind === "time", distr: c.log_x ? 3 : 1, range: c.log_x ? undefined : function (u, lo, hi) {
        var a = c.x[0];
        if (a !== c.x[c.x.length - 1]) return [lo, hi];
        return c.x_kind === "time" ? [a - 86400, a + 86400] : [0, a * 1.1 || 1];
      }}},
      axes: [c.log_x ? {splits: decades, values: function (u, vals) { return vals.map(human); }}
             : {values: c.x_kind === "time" ? undefined : function (u, vals) { return vals.map(human); }},
             {values: function (u, vals) { return vals.map(human); }, size: 60}],
      series: series,
      hooks: {
        draw: [function (u) { box.setAttribute("data-points", String(countDrawn(u))); }],
        setCursor: [function (u) {
          var i = u.cursor.idx;
          if (i === null || i === undefined || u.cursor.left < 0) { showTip(null); return; }
          var lines = [c.names[i], c.x_label + ": " + (c.x_kind === "time" ? date(c.x[i]) : human(c.x[i]))];
          c.labels.forEach(function (label, s) { if (c.ys[s][i] !== null) lines.push(label + ": " + human(c.ys[s][i])); });
          var r = u.over.getBoundingClientRect();
          showTip(lines.join("\n"), r.left + u.cursor.left, r.top + u.cursor.top);
        }]
      }
    };
    plots.push(new uPlot(opts, [c.x].concat(c.ys), box));
    if (c.total > c.x.length) box.appendChild(el("p", {class: "muted"}, "downsampled: " + c.x.length + " of " + c.total + " points (min and max of each bucket kept)"));
  }

  // ------------------------------------------------------------------ what each token bought
  function drawGains(d) {
    var b = body("gains"), g = d.gains;
    if (!g.available) { b.appendChild(el("div", {class: "empty"}, g.note)); return; }
    if (g.note) b.appendChild(el("p", {class: "muted"}, g.note));
    if (g.eval_set) b.appendChild(el("p", {}, "Evaluation set: " + g.eval_set.filename + " (" + g.eval_set.method + ")"));
    b.appendChild(el("p", {}, g.trend.ok ? "Trend: " + g.trend.statement : "No trend yet: " + g.trend.reason + "."));
    var dup = g.duplicates;
    if (dup.records) b.appendChild(el("p", {}, "Duplicates avoided: " + human(dup.records) + " records, ~" + human(dup.tokens) +
      " tokens, ~" + num(dup.device_hours) + " device-hours that training them again would have cost."));
    if (g.versions.length) {
      if (g.versions.length < g.versions_total) b.appendChild(el("p", {class: "muted"}, "The newest " + g.versions.length + " of " + g.versions_total + " training versions of the active lineage:"));
      var wrap = el("div", {class: "scroll"});
      table(wrap, [["version"], ["tokens", true], ["device-h", true], ["eval before", true], ["eval after", true],
                   ["gain", true], ["gain / B tokens", true], ["gain / device-h", true]], g.versions.map(function (v) {
        return [v.name, human(v.tokens), num(v.device_hours), num(v.eval_before, 4), num(v.eval_after, 4), num(v.gain),
                num(v.gain_per_billion_tokens), num(v.gain_per_device_hour)];
      }));
      b.appendChild(wrap);
    }
    if (g.files.length) {
      b.appendChild(el("p", {}, "Data files by gain per token (" + g.files.length + " of " + g.files_total + "):"));
      table(b, [["file"], ["tokens", true], ["gain", true], ["gain / B tokens", true], ["gain / device-h", true]], g.files.map(function (f) {
        return [f.filename, human(f.tokens), num(f.gain), num(f.gain_per_billion_tokens), num(f.gain_per_device_hour)];
      }));
    }
  }

  // ------------------------------------------------------------------ lineage (SVG)
  function lanesOf(nodes) {
    var lane = [], continued = {}, next = 0;
    nodes.forEach(function (n, i) {
      var p = n.parents.length ? n.parents[0] : -1;
      if (p >= 0 && !continued[p]) { lane[i] = lane[p]; continued[p] = true; }
      else if (i === 0) { lane[i] = next++; }
      else { lane[i] = next++; }
    });
    return {lane: lane, count: next};
  }
  function drawLineage(d) {
    var b = body("lineage"), L = d.lineage, nodes = L.nodes;
    if (!nodes.length) { b.appendChild(el("div", {class: "empty"}, "No versions yet.")); b.setAttribute("data-points", "0"); return; }
    if (L.total > L.shown) b.appendChild(el("p", {class: "muted"}, "The newest " + L.shown + " of " + L.total + " versions."));
    var lay = lanesOf(nodes), DX = 30, DY = 34, TOP = 70, LEFT = 24;
    var w = LEFT * 2 + 90 + DX * (nodes.length - 1), h = TOP + DY * lay.count + 10;
    var s = svg("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img"});
    var pos = nodes.map(function (n, i) { return [LEFT + DX * i, TOP + DY * lay.lane[i]]; });
    nodes.forEach(function (n, i) {
      n.parents.forEach(function (p) {
        var a = pos[i];
        if (p < 0) { s.appendChild(svg("path", {class: "edge", d: "M" + (a[0] - 18) + " " + a[1] + " H" + a[0], "stroke-dasharray": "3 3"})); return; }
        var o = pos[p], mx = (o[0] + a[0]) / 2;
        s.appendChild(svg("path", {class: "edge", d: "M" + o[0] + " " + o[1] + " C" + mx + " " + o[1] + " " + mx + " " + a[1] + " " + a[0] + " " + a[1]}));
      });
    });
    var drawn = 0;
    nodes.forEach(function (n, i) {
      var c = svg("circle", {cx: pos[i][0], cy: pos[i][1], r: n.active ? 7 : 5,
        class: "node " + n.kind + (n.active ? " active" : ""), "data-version": n.name});
      var info = [n.name + (n.active ? "  (active)" : ""), n.kind + ", " + n.created];
      if (n.tokens !== null) info.push("tokens: " + human(n.tokens));
      if (n.final_loss !== null) info.push("final loss: " + human(n.final_loss));
      if (n.branches.length) info.push("branch: " + n.branches.join(", "));
      if (n.tags.length) info.push("tags: " + n.tags.join(", "));
      var t = svg("title"); t.textContent = info.join("\n"); c.appendChild(t);
      c.addEventListener("mousemove", function (e) { showTip(info.join("\n"), e.clientX, e.clientY); });
      c.addEventListener("mouseleave", function () { showTip(null); });
      s.appendChild(c); drawn++;
      var label = n.branches.concat(n.tags);
      if (n.active) label.unshift("HEAD");
      if (label.length) {
        var x = pos[i][0] + 2, y = pos[i][1] - 9;
        var tx = svg("text", {x: x, y: y, class: "tip", transform: "rotate(-35 " + x + " " + y + ")"});
        tx.textContent = label.join(", "); s.appendChild(tx);
      }
    });
    var wrap = el("div", {class: "scroll"}); wrap.appendChild(s); b.appendChild(wrap);
    b.setAttribute("data-points", String(drawn));
    wrap.scrollLeft = w;
  }

  // ------------------------------------------------------------------ tables
  function table(parent, head, rows) {
    var t = el("table"), tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", h[1] ? {class: "num"} : {}, h[0])); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v, i) { row.appendChild(el("td", head[i][1] ? {class: "num"} : (head[i][2] ? {class: "status-" + v} : {}), v)); });
      t.appendChild(row);
    });
    parent.appendChild(t);
  }
  function drawQueue(d) {
    var b = body("queue"), q = d.queue;
    if (!q.branches.length) { b.appendChild(el("div", {class: "empty"}, q.note || "The queue is empty.")); return; }
    q.branches.forEach(function (br) {
      var counts = Object.keys(br.counts).map(function (k) { return br.counts[k] + " " + k; }).join(", ");
      b.appendChild(el("p", {}, "Branch " + br.branch + ": " + (br.error || counts) +
        (br.paused ? " — paused: " + br.paused : "")));
      if (br.items.length < br.total) b.appendChild(el("p", {class: "muted"}, br.items.length + " of " + br.total + " items listed: the last done and the next ones."));
      table(b, [["file"], ["status", false, true], ["version / reason"], ["tokens", true]], br.items.map(function (it) {
        return [it.file, it.status, it.version || it.reason || "", it.tokens === null ? "" : human(it.tokens)];
      }));
    });
  }
  function drawData(d) {
    var b = body("data"), t = d.data.totals;
    if (!d.data.registered) { b.appendChild(el("div", {class: "empty"}, "No data files registered yet (lin data add FILE).")); return; }
    b.appendChild(el("p", {}, t.files + " training files registered: " + t.trained + " trained, " + t["partly trained"] + " partly, " +
      t["in training"] + " in training, " + t.untrained + " untrained; " + human(t.tokens_trained) + " of " + human(t.tokens) + " tokens trained."));
    var bar = el("div", {class: "bar"}), fill = el("span");
    fill.style.width = (t.tokens ? 100 * t.tokens_trained / t.tokens : 0) + "%"; bar.appendChild(fill); b.appendChild(bar);
    if (d.data.listed < d.data.registered) b.appendChild(el("p", {class: "muted"}, "The " + d.data.listed + " most recently registered files:"));
    table(b, [["file"], ["status", false, true], ["trained", true], ["tokens", true], ["in"]], d.data.files.map(function (f) {
      return [f.file, f.status, Math.round(100 * f.share) + "%", human(f.tokens), f.trained_in.join(", ")];
    }));
  }
  function drawStorage(d) {
    var b = body("storage"), s = d.storage, k = d.backup, f = el("div", {class: "figures"});
    figure(f, "store on disk", bytes(s.total_bytes));
    figure(f, "loose objects (" + s.objects + " files)", bytes(s.bytes));
    if (s.pack_files) figure(f, "packs (" + s.pack_files + " files)", bytes(s.pack_bytes));
    figure(f, "trash (gc, kept for the grace period)", bytes(s.trash_bytes));
    figure(f, "versions backed up", k.remote ? k.backed_up + " of " + k.total : "no backup");
    b.appendChild(f);
    b.appendChild(el("p", {class: k.remote && !k.damaged && !k.pending && k.backed_up === k.total ? "status-done" : "status-parked"}, "Backup: " + k.summary));
  }

  // ------------------------------------------------------------------ the page
  function render(d) {
    current = d;
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    document.getElementById("subtitle").textContent = d.store + " — format " + d.format_version + " — read " + d.generated;
    drawProgress(d);
    d.charts.forEach(drawChart);
    drawGains(d);
    drawLineage(d);
    drawQueue(d);
    drawData(d);
    drawStorage(d);
    var missing = Object.keys(d.sources).filter(function (k) { return !d.sources[k]; });
    document.getElementById("footer").textContent = "lin report — charts: at most " + d.limits.points_per_chart +
      " points each; lineage: the newest " + d.limits.lineage_nodes + " versions" +
      (missing.length ? "; this store has no " + missing.join(", no ") + " yet" : "");
  }
  function resized() {
    plots.forEach(function (p) { var box = p.root.parentNode; p.setSize({width: Math.max(260, box.clientWidth), height: 240}); });
  }
  // ask with the ETag of the figures drawn: unchanged figures come back as an empty 304
  var etag = null;
  function poll(every) {
    setTimeout(function () {
      fetch("data.json", {cache: "no-store", headers: etag ? {"If-None-Match": etag} : {}}).then(function (r) {
        if (r.status !== 200) return null;
        etag = r.headers.get("ETag");
        return r.json();
      }).then(function (d) {
        if (d && (!current || d.generated !== current.generated)) render(d);
      }).catch(function () {}).then(function () { poll(every); });
    }, every * 1000);
  }

  render(JSON.parse(document.getElementById("lin-data").textContent));
  var resizeTimer = null;
  window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(resized, 150); });
  var live = parseFloat(document.querySelector('meta[name="lin-live"]').getAttribute("content"));
  if (live > 0) poll(live);
})();
