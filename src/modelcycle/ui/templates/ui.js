// modelcycle ui: draws the pages' plotly figures, sorts and filters the runs table, refreshes the
// endpoint panel. No external resources: plotly.js is served by the dashboard itself.
"use strict";

function drawFigures() {
  document.querySelectorAll("script[data-figure-for]").forEach(function (node) {
    var target = document.getElementById(node.getAttribute("data-figure-for"));
    if (!target || !window.Plotly) return;
    var figure = JSON.parse(node.textContent);
    Plotly.newPlot(target, figure.data || [], figure.layout || {}, {displaylogo: false, responsive: true});
  });
}

function cellValue(row, key, numeric) {
  var cell = row.querySelector('td[data-key="' + key + '"]');
  var text = cell ? cell.getAttribute("data-value") : "";
  if (!numeric) return text;
  var number = parseFloat(text);
  return isNaN(number) ? null : number;
}

function setUpRunsTable() {
  var table = document.getElementById("runs");
  if (!table) return;
  var body = table.tBodies[0];
  table.querySelectorAll("th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-sort");
      var numeric = th.getAttribute("data-numeric") === "true";
      // metrics (and times) sort descending on the first click, text ascending; then it toggles
      var previous = th.getAttribute("data-direction");
      var direction = previous ? (previous === "asc" ? "desc" : "asc") : (numeric ? "desc" : "asc");
      table.querySelectorAll("th[data-sort]").forEach(function (other) { other.removeAttribute("data-direction"); });
      th.setAttribute("data-direction", direction);
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = cellValue(a, key, numeric), y = cellValue(b, key, numeric);
        if (x === null && y === null) return 0;
        if (x === null || x === "") return 1;   // missing values last either way
        if (y === null || y === "") return -1;
        var order = x < y ? -1 : x > y ? 1 : 0;
        return direction === "asc" ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  var filter = document.getElementById("run-filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var needle = filter.value.toLowerCase();
      Array.prototype.forEach.call(body.rows, function (row) {
        var text = (row.getAttribute("data-search") || "").toLowerCase();
        row.style.display = text.indexOf(needle) >= 0 ? "" : "none";
      });
    });
  }
}

function formatMs(value) { return value === null || value === undefined ? "—" : value.toFixed(1) + " ms"; }

function setUpEndpointPanel() {
  var panel = document.getElementById("endpoint-live");
  if (!panel) return;
  var api = panel.getAttribute("data-api");
  var last = null;
  function refresh() {
    fetch(api, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        var m = data.metrics;
        document.getElementById("payload-count").textContent = data.payload_count;
        document.getElementById("feedback-count").textContent = data.feedback_count;
        if (!m) return;
        var now = Date.now();
        if (last) {
          var rate = (m.requests - last.requests) / ((now - last.at) / 1000);
          document.getElementById("request-rate").textContent = Math.max(0, rate).toFixed(1);
        }
        last = {requests: m.requests, at: now};
        document.getElementById("request-count").textContent = String(m.requests);
        document.getElementById("latency-p50").textContent = formatMs(m.p50_ms);
        document.getElementById("latency-p99").textContent = formatMs(m.p99_ms);
        document.getElementById("error-rate").textContent = (100 * m.error_rate).toFixed(2) + " %";
      })
      .catch(function () { /* the next tick tries again */ });
  }
  refresh();
  setInterval(refresh, 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  drawFigures();
  setUpRunsTable();
  setUpEndpointPanel();
});
