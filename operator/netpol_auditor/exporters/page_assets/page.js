// The reachability page's script: draws the matrix from the page-data element, as text only (never as markup:
// every name in the data is user data). State lives in the URL fragment, so a link (or a test) opens a view:
// #from=NS&to=NS&port=80/TCP&view=workloads|namespaces&src=NS/NAME[Kind]&dst=NS/NAME[Kind]
(function () {
  "use strict";
  var body = document.body;
  var errors = [];

  function fail(message) {
    errors.push(String(message));
    var box = document.getElementById("errors");
    box.textContent = "The page failed: " + errors.join("\n");
    box.hidden = false;
    body.setAttribute("data-errors", String(errors.length));
  }
  window.addEventListener("error", function (e) { fail(e.message || "script error"); });
  document.addEventListener("securitypolicyviolation", function (e) {
    fail("blocked by the Content-Security-Policy: " + e.violatedDirective + " " + e.blockedURI);
  });

  var D = JSON.parse(document.getElementById("page-data").textContent);
  var E = D.endpoints;
  var NS = D.namespaces;
  var PORTS = D.ports;
  var AUTO_CELLS = 40000; // more workload cells than this: the namespace view first

  function nsName(i) { return NS[i] === "" ? "(outside the cluster)" : NS[i]; }
  function shortName(e) {
    var n = e.n;
    var slash = n.indexOf("/");
    return NS[e.ns] === "" || slash < 0 ? n : n.slice(slash + 1);
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // -- verdicts ------------------------------------------------------------------------------------------------
  // A cell's verdict is the source's egress decision (D.egress, rows over destination classes) and the
  // destination's ingress decision (D.ingress, rows over source classes): a direction id, -1 for a side outside
  // the cluster, or -2 - k for a pair not judged (D.unjudged[k]).
  var rowCache = {};
  function decoded(table, p, c) {
    var key = table + ":" + p + ":" + c;
    var row = rowCache[key];
    if (row === undefined) {
      row = [];
      var text = D[table][p][String(c)];
      if (text) {
        text.split(",").forEach(function (part) {
          var star = part.indexOf("*");
          var v = parseInt(star < 0 ? part : part.slice(0, star), 10);
          var n = star < 0 ? 1 : parseInt(part.slice(star + 1), 10);
          for (var k = 0; k < n; k++) { row.push(v); }
        });
      }
      rowCache[key] = row;
    }
    return row;
  }

  var verdictCache = {};
  // as engine.make_verdict: denied if a half denies, not known if a half is not known, else allowed; the deciding
  // policies are those of the halves that decide (engine.Verdict.deciding_policies)
  function verdictOf(key) {
    var found = verdictCache[key];
    if (found !== undefined) { return found; }
    var parts = key.split(",");
    var e = parseInt(parts[0], 10), i = parseInt(parts[1], 10);
    if (e <= -2) {
      found = { a: null, r: D.unjudged[-2 - e], p: [] };
    } else {
      var halves = [e === -1 ? null : D.directions[e], i === -1 ? null : D.directions[i]];
      var outcomes = halves.filter(function (dv) { return dv !== null; }).map(function (dv) { return dv.al; });
      var allowed = outcomes.indexOf(false) >= 0 ? false : (outcomes.indexOf(null) >= 0 ? null : true);
      var deciding = [];
      var unknown = [];
      halves.forEach(function (dv) {
        if (dv === null) { return; }
        if (dv.unk) { unknown.push(dv.unk); }
        if (allowed !== null && (allowed || dv.al !== true)) {
          dv.dp.forEach(function (name) { if (deciding.indexOf(name) < 0) { deciding.push(name); } });
        }
      });
      found = { a: allowed, e: halves[0], i: halves[1], p: deciding, r: unknown.join("; ") };
    }
    verdictCache[key] = found;
    return found;
  }

  // the verdicts of (i, j) on port p, by key: one per class pair of the two endpoints, distinct
  function verdictIds(i, j, p) {
    var out = [];
    E[i].c.forEach(function (cs) {
      var egress = decoded("egress", p, cs);
      E[j].c.forEach(function (cd) {
        var key = egress[cd] + "," + decoded("ingress", p, cd)[cs];
        if (egress[cd] !== undefined && out.indexOf(key) < 0) { out.push(key); }
      });
    });
    return out;
  }

  var obsIndex = {};
  D.observations.forEach(function (o) {
    var key = o[0] + "," + o[1] + "," + o[2];
    (obsIndex[key] = obsIndex[key] || []).push({ status: o[3], reason: o[4] });
  });
  function observations(i, j, p) {
    var out = [];
    E[i].g.forEach(function (a) {
      E[j].g.forEach(function (b) {
        var found = obsIndex[a + "," + b + "," + p];
        if (found) { out = out.concat(found); }
      });
    });
    return out;
  }
  // the worst observation wins: a mismatch, else anything inconclusive, else confirmed
  function worst(list) {
    var rank = { mismatch: 3, inconclusive: 2, confirmed: 1 };
    var best = null;
    list.forEach(function (o) { if (best === null || rank[o.status] > rank[best]) { best = o.status; } });
    return best;
  }

  // per port: {state: allowed|denied|none|mixed, ids, obs}
  function portCell(i, j, p) {
    if (i === j) { return { state: "none", ids: [], obs: [], self: true }; }
    var ids = verdictIds(i, j, p);
    var kinds = {};
    ids.forEach(function (v) { kinds[String(verdictOf(v).a)] = true; });
    var names = Object.keys(kinds);
    var state = names.length !== 1 ? (names.length ? "mixed" : "none")
      : (names[0] === "true" ? "allowed" : (names[0] === "false" ? "denied" : "none"));
    return { state: state, ids: ids, obs: observations(i, j, p) };
  }

  function cellSummary(i, j, ports) {
    var allowed = 0, judged = 0, mixed = false, obs = [];
    var perPort = ports.map(function (p) {
      var c = portCell(i, j, p);
      if (c.state === "allowed") { allowed++; judged++; }
      else if (c.state === "denied") { judged++; }
      else if (c.state === "mixed") { mixed = true; }
      obs = obs.concat(c.obs);
      return c;
    });
    var cls, mark;
    if (mixed) { cls = "v-mixed"; mark = "±"; }
    else if (judged === 0) { cls = "v-none"; mark = "–"; }
    else if (allowed === judged) { cls = "v-allowed"; mark = "A"; }
    else if (allowed === 0) { cls = "v-denied"; mark = "D"; }
    else { cls = "v-partial"; mark = allowed + "/" + judged; }
    var o = worst(obs);
    if (o) { cls += " o-" + o; mark += { mismatch: "!", inconclusive: "?", confirmed: "✓" }[o]; }
    return { cls: cls, mark: mark, perPort: perPort, allowed: allowed, judged: judged, mixed: mixed, obs: o };
  }

  function describeSummary(s, ports) {
    var text;
    if (s.mixed) { text = "judged differently for different pods"; }
    else if (s.judged === 0) { text = "not judged"; }
    else if (s.allowed === s.judged) { text = "allowed" + (ports.length > 1 ? " on every port" : ""); }
    else if (s.allowed === 0) { text = "denied" + (ports.length > 1 ? " on every port" : ""); }
    else { text = "allowed on " + s.allowed + " of " + s.judged + " ports"; }
    if (s.obs === "mismatch") { text += "; a probe contradicted the prediction (mismatch)"; }
    else if (s.obs === "inconclusive") { text += "; probed, inconclusive"; }
    else if (s.obs === "confirmed") { text += "; confirmed by probes"; }
    return text;
  }

  // -- state (the URL fragment) --------------------------------------------------------------------------------
  function readState() {
    var params = new URLSearchParams(location.hash.slice(1));
    var port = params.get("port") || "all";
    return {
      from: params.get("from") || "",
      to: params.get("to") || "",
      port: port === "all" || PORTS.indexOf(port) >= 0 ? port : "all",
      view: params.get("view") || "auto",
      src: params.get("src") || "",
      dst: params.get("dst") || ""
    };
  }
  function writeState(state) {
    var params = new URLSearchParams();
    ["from", "to", "port", "view", "src", "dst"].forEach(function (k) {
      if (state[k] && !(k === "port" && state[k] === "all") && !(k === "view" && state[k] === "auto")) {
        params.set(k, state[k]);
      }
    });
    var hash = "#" + params.toString();
    if (location.hash !== hash) { location.hash = hash; } else { render(); }
  }

  function inNamespace(list, ns) {
    return list.filter(function (i) { return ns === "" || NS[E[i].ns] === ns; });
  }

  // -- controls ------------------------------------------------------------------------------------------------
  function fillSelect(id, options, value) {
    var select = document.getElementById(id);
    select.textContent = "";
    options.forEach(function (o) {
      var option = el("option", "", o[1]);
      option.value = o[0];
      select.appendChild(option);
    });
    select.value = value;
  }
  function controls(state) {
    var nsOptions = [["", "all namespaces"]].concat(NS.map(function (n, i) { return [n, nsName(i)]; }));
    fillSelect("from-ns", nsOptions, state.from);
    fillSelect("to-ns", nsOptions, state.to);
    fillSelect("port", [["all", "all ports"]].concat(PORTS.map(function (p) { return [p, p]; })), state.port);
    fillSelect("view", [["auto", "automatic"], ["workloads", "workloads"], ["namespaces", "namespaces"]], state.view);
  }
  [["from-ns", "from"], ["to-ns", "to"], ["port", "port"], ["view", "view"]].forEach(function (pair) {
    document.getElementById(pair[0]).addEventListener("change", function (e) {
      var state = readState();
      state[pair[1]] = e.target.value;
      if (pair[1] !== "port") { state.src = ""; state.dst = ""; }
      writeState(state);
    });
  });

  // -- the workload matrix -------------------------------------------------------------------------------------
  function workloadMatrix(table, rows, cols, ports, state) {
    var head = el("thead");
    var nsRow = el("tr", "nss");
    var corner = el("th", "corner", "from \\ to");
    corner.rowSpan = 2;
    corner.scope = "col";
    nsRow.appendChild(corner);
    var colRow = el("tr", "cols");
    var k = 0;
    while (k < cols.length) {
      var ns = E[cols[k]].ns, span = 0;
      while (k < cols.length && E[cols[k]].ns === ns) { span++; k++; }
      var th = el("th", "ns", nsName(ns));
      th.colSpan = span;
      th.scope = "colgroup";
      th.title = "namespace " + nsName(ns);
      nsRow.appendChild(th);
    }
    cols.forEach(function (j) {
      var th = el("th", "col", shortName(E[j]));
      th.scope = "col";
      th.title = "to " + E[j].n;
      colRow.appendChild(th);
    });
    head.appendChild(nsRow);
    head.appendChild(colRow);
    table.appendChild(head);
    var tbody = el("tbody");
    var counts = { allowed: 0, denied: 0, other: 0, mismatch: 0, inconclusive: 0, confirmed: 0 };
    rows.forEach(function (i) {
      var tr = el("tr");
      var th = el("th", "", E[i].n);
      th.scope = "row";
      th.title = "from " + E[i].n;
      tr.appendChild(th);
      cols.forEach(function (j) {
        var s = cellSummary(i, j, ports);
        var td = el("td", s.cls, s.mark);
        td.tabIndex = 0;
        td.setAttribute("data-i", String(i));
        td.setAttribute("data-j", String(j));
        td.title = E[i].n + " → " + E[j].n + ": " + describeSummary(s, ports);
        if (E[i].n === state.src && E[j].n === state.dst) { td.classList.add("selected"); }
        if (i !== j) {
          if (s.judged && s.allowed === s.judged && !s.mixed) { counts.allowed++; }
          else if (s.judged && s.allowed === 0 && !s.mixed) { counts.denied++; }
          else { counts.other++; }
          if (s.obs) { counts[s.obs]++; }
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    return rows.length + " × " + cols.length + " workloads: " + counts.allowed + " pairs allowed, " +
      counts.denied + " denied, " + counts.other + " partly or not judged" +
      (D.probed ? "; probes: " + counts.confirmed + " confirmed, " + counts.mismatch + " mismatched, " +
        counts.inconclusive + " inconclusive" : "") + ".";
  }

  // -- the namespace matrix ------------------------------------------------------------------------------------
  function namespaceMatrix(table, rows, cols, ports) {
    var rowNs = [], colNs = [];
    rows.forEach(function (i) { if (rowNs.indexOf(E[i].ns) < 0) { rowNs.push(E[i].ns); } });
    cols.forEach(function (j) { if (colNs.indexOf(E[j].ns) < 0) { colNs.push(E[j].ns); } });
    var agg = {};
    rows.forEach(function (i) {
      cols.forEach(function (j) {
        if (i === j) { return; }
        var key = E[i].ns + "," + E[j].ns;
        var a = agg[key] || (agg[key] = { pairs: 0, allowed: 0, denied: 0, mismatch: 0, inconclusive: 0,
          confirmed: 0 });
        var s = cellSummary(i, j, ports);
        a.pairs++;
        if (!s.mixed && s.judged && s.allowed === s.judged) { a.allowed++; }
        else if (!s.mixed && s.judged && s.allowed === 0) { a.denied++; }
        if (s.obs) { a[s.obs]++; }
      });
    });
    var head = el("thead");
    var tr = el("tr", "cols");
    var corner = el("th", "corner", "from \\ to");
    corner.scope = "col";
    tr.appendChild(corner);
    colNs.forEach(function (n) {
      var th = el("th", "col", nsName(n));
      th.scope = "col";
      th.title = "to namespace " + nsName(n);
      tr.appendChild(th);
    });
    head.appendChild(tr);
    table.appendChild(head);
    var tbody = el("tbody");
    rowNs.forEach(function (rn) {
      var row = el("tr");
      var th = el("th", "", nsName(rn));
      th.scope = "row";
      th.title = "from namespace " + nsName(rn);
      row.appendChild(th);
      colNs.forEach(function (cn) {
        var a = agg[rn + "," + cn];
        var cls = "v-none", mark = "–", text = "no pairs";
        if (a && a.pairs) {
          if (a.allowed === a.pairs) { cls = "v-allowed"; mark = "A"; }
          else if (a.denied === a.pairs) { cls = "v-denied"; mark = "D"; }
          else { cls = "v-partial"; mark = a.allowed + "/" + a.pairs; }
          text = a.pairs + " workload pairs: " + a.allowed + " allowed on every port, " + a.denied +
            " denied on every port, " + (a.pairs - a.allowed - a.denied) + " partly or not judged";
          var o = a.mismatch ? "mismatch" : (a.inconclusive ? "inconclusive" : (a.confirmed ? "confirmed" : null));
          if (o) { cls += " o-" + o; mark += { mismatch: "!", inconclusive: "?", confirmed: "✓" }[o]; }
          if (D.probed) {
            text += "; probes: " + a.confirmed + " confirmed, " + a.mismatch + " mismatched, " + a.inconclusive +
              " inconclusive";
          }
        }
        var td = el("td", cls, mark);
        td.tabIndex = 0;
        td.setAttribute("data-from-ns", NS[rn]);
        td.setAttribute("data-to-ns", NS[cn]);
        td.title = nsName(rn) + " → " + nsName(cn) + ": " + text + " (select to see its workloads)";
        row.appendChild(td);
      });
      tbody.appendChild(row);
    });
    table.appendChild(tbody);
    return rowNs.length + " × " + colNs.length + " namespaces (" + rows.length + " × " + cols.length +
      " workloads); select a cell to see its workloads.";
  }

  // -- details -------------------------------------------------------------------------------------------------
  function directionText(dv, name, subject, other, outside) {
    var word = name.toLowerCase();
    if (dv === null || dv === undefined) {
      return name + ": " + outside + " is outside the cluster; no policy applies to its " + word + ".";
    }
    var passed = dv.adm ? "the Admin tier passes it on (" + dv.adm + "); " : "";
    if (dv.t === "unknown") {
      return name + ": not known from the objects read: " + dv.unk + ".";
    }
    if (dv.t === "Admin") {
      return name + ": decided by " + dv.adm + ": " + (dv.al ? "allowed." : "denied.");
    }
    if (dv.t === "Baseline") {
      return name + ": " + passed + subject + " is not isolated for " + word + " by a NetworkPolicy; decided by " +
        dv.base + ": " + (dv.al ? "allowed." : "denied.");
    }
    if (!dv.iso) {
      return name + ": " + passed + subject + " is not isolated for " + word + " (no policy selecting it lists " +
        name + " in policyTypes): allowed.";
    }
    if (dv.ok.length) {
      return name + ": " + passed + subject + " is isolated for " + word + " by " + dv.by.join(", ") +
        "; allowed by " + dv.ok.join("; ") + ".";
    }
    return name + ": " + passed + subject + " is isolated for " + word + " by " + dv.by.join(", ") + "; no " + word +
      " rule of these policies allows traffic " + (name === "Ingress" ? "from " : "to ") + other +
      " on this port: denied.";
  }

  function detail(i, j, ports) {
    var box = document.getElementById("detail");
    box.textContent = "";
    var src = E[i].n, dst = E[j].n;
    box.appendChild(el("h2", "", src + " → " + dst));
    if (i === j) {
      box.appendChild(el("p", "", "An endpoint and itself: not judged (a pod never blocks traffic to itself)."));
      return;
    }
    ports.forEach(function (p) {
      var c = portCell(i, j, p);
      var section = el("section");
      section.setAttribute("data-port", PORTS[p]);
      var h = el("h3", "", PORTS[p] + ": ");
      var stateText = { allowed: "allowed", denied: "denied", none: "not judged",
        mixed: "judged differently for different pods" }[c.state];
      h.appendChild(el("span", "verdict-" + c.state, stateText));
      section.appendChild(h);
      var o = worst(c.obs);
      if (o) {
        var line = el("p", "obs-" + o, { mismatch: "Mismatch: a probe contradicted the prediction.",
          inconclusive: "Probed, inconclusive.", confirmed: "Confirmed by a probe." }[o]);
        section.appendChild(line);
        var reasons = [];
        c.obs.forEach(function (x) { if (x.reason && reasons.indexOf(x.reason) < 0) { reasons.push(x.reason); } });
        if (reasons.length) {
          var ul = el("ul", "reasons");
          reasons.forEach(function (r) { ul.appendChild(el("li", "", r)); });
          section.appendChild(ul);
        }
      } else if (D.probed) {
        section.appendChild(el("p", "hint", "Not probed on this port (yet)."));
      }
      c.ids.forEach(function (v, n) {
        var verdict = verdictOf(v);
        if (c.ids.length > 1) {
          section.appendChild(el("p", "", "Variant " + (n + 1) + ": " +
            (verdict.a === true ? "allowed" : (verdict.a === false ? "denied" : "not judged"))));
        }
        var ul = el("ul", "why");
        if (verdict.a === null && !verdict.e && !verdict.i) {
          ul.appendChild(el("li", "", "Not judged: " + verdict.r));
        } else {
          ul.appendChild(el("li", "", directionText(verdict.e, "Egress", src, dst, src)));
          ul.appendChild(el("li", "", directionText(verdict.i, "Ingress", dst, src, dst)));
          ul.appendChild(el("li", "", verdict.a === null ? "Not known: " + verdict.r :
            "Deciding policies: " + (verdict.p.length ? verdict.p.join(", ") : "none (no policy isolates either side)")));
        }
        section.appendChild(ul);
      });
      box.appendChild(section);
    });
  }

  // -- drawing -------------------------------------------------------------------------------------------------
  function render() {
    var state = readState();
    controls(state);
    var ports = state.port === "all" ? PORTS.map(function (_, p) { return p; }) : [PORTS.indexOf(state.port)];
    var rows = inNamespace(D.rows, state.from);
    var cols = inNamespace(D.cols, state.to);
    var view = state.view;
    if (view === "auto") { view = rows.length * cols.length > AUTO_CELLS ? "namespaces" : "workloads"; }
    var table = document.getElementById("matrix");
    table.textContent = "";
    table.setAttribute("data-view", view);
    var caption = el("caption", "visually-hidden", "Reachability: rows are sources, columns destinations");
    table.appendChild(caption);
    var summary;
    if (!rows.length || !cols.length) {
      summary = "No endpoints in this selection.";
    } else if (view === "namespaces") {
      summary = namespaceMatrix(table, rows, cols, ports);
    } else {
      summary = workloadMatrix(table, rows, cols, ports, state);
    }
    document.getElementById("summary").textContent = summary;
    var byName = {};
    E.forEach(function (e, i) { byName[e.n] = i; });
    var box = document.getElementById("detail");
    if (state.src in byName && state.dst in byName) {
      detail(byName[state.src], byName[state.dst], ports);
      box.setAttribute("data-src", state.src);
      box.setAttribute("data-dst", state.dst);
    } else {
      box.textContent = "";
      box.appendChild(el("p", "hint", "Select a cell to see why."));
      box.removeAttribute("data-src");
      box.removeAttribute("data-dst");
    }
    body.setAttribute("data-view", view);
    body.setAttribute("data-state", errors.length ? "failed" : "ready");
  }

  function activate(td) {
    var state = readState();
    if (td.hasAttribute("data-from-ns")) {
      state.from = td.getAttribute("data-from-ns");
      state.to = td.getAttribute("data-to-ns");
      state.view = "workloads";
      state.src = "";
      state.dst = "";
    } else {
      state.src = E[parseInt(td.getAttribute("data-i"), 10)].n;
      state.dst = E[parseInt(td.getAttribute("data-j"), 10)].n;
    }
    writeState(state);
  }
  var table = document.getElementById("matrix");
  table.addEventListener("click", function (e) {
    var td = e.target.closest("td");
    if (td) { activate(td); }
  });
  table.addEventListener("keydown", function (e) {
    var td = e.target.closest("td");
    if (td && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); activate(td); }
  });
  window.addEventListener("hashchange", render);
  try {
    render();
  } catch (e) {
    fail(e && e.stack ? e.stack : e);
    body.setAttribute("data-state", "failed");
  }
}());
