"""``agentic-rollout view``: trajectories as one self-contained HTML report.

The report is a single file with the data inlined as JSON and a small script that renders it:
no network, no CDN, so it opens from a laptop's disk. A table of trajectories (id, status,
reward, turns, tokens, durations) with filters, search and sorting; a per-trajectory view with
the steps (messages, tool calls and their arguments, outputs folded when long), the patch as a
coloured diff, errors, retries and reward details. Lines of the JSONL that cannot be read are
listed by number at the top; the others are shown.

Every string from a trajectory reaches the page through ``textContent``, never as HTML, so a
model's output cannot script the report. Depends on the trajectory model only.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.exceptions import ConfigError
from orchestrator.trajectory import Trajectory


@dataclass
class LoadedRun:
    """Readable trajectories of a run and the lines that were not."""

    source: Path
    trajectories: list[Trajectory] = field(default_factory=list)
    #: (file, line number, reason)
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)


def trajectory_files(path: str | Path) -> list[Path]:
    """A JSONL file, or the ``*.jsonl`` files of a run folder (``trajectories.jsonl`` first)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.jsonl"), key=lambda f: (f.name != "trajectories.jsonl", f.name))
        files = [f for f in files if f.name != "predictions.jsonl"]
        if files:
            return files
        raise ConfigError(f"{p} holds no *.jsonl trajectory file")
    raise ConfigError(f"{p} does not exist")


def load_run(path: str | Path) -> LoadedRun:
    """Every readable trajectory; a corrupt line is recorded with its number, not fatal."""
    run = LoadedRun(source=Path(path))
    for file in trajectory_files(path):
        with open(file, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError as exc:
                    run.bad_lines.append((file.name, number, f"not valid JSON: {exc}"))
                    continue
                if not isinstance(data, dict):
                    run.bad_lines.append(
                        (file.name, number, f"a trajectory is an object, got {type(data).__name__}")
                    )
                    continue
                try:
                    run.trajectories.append(Trajectory.from_dict(data))
                except (ValidationError, ConfigError) as exc:
                    first = str(exc).splitlines()
                    run.bad_lines.append((file.name, number, " ".join(first[:3])[:300]))
    return run


def _row(t: Trajectory) -> dict[str, Any]:
    """What the table shows and filters on, computed here so the page stays simple."""
    return {
        "id": t.request_id,
        "agent": t.agent_type,
        "status": t.status.value,
        "reward": t.reward,
        "turns": t.turns,
        "tool_calls": len(t.get_tool_calls()),
        "tokens": t.usage.total_tokens,
        "duration": t.duration,
        "llm_seconds": t.llm_seconds,
        "tool_seconds": t.tool_seconds,
        "errors": len(t.errors),
        "patch": t.patch,
        "trajectory": t.to_dict(),
    }


def render_html(run: LoadedRun, *, title: str | None = None) -> str:
    payload = {
        "source": str(run.source),
        "rows": [_row(t) for t in run.trajectories],
        "bad_lines": [{"file": f, "line": n, "reason": r} for f, n, r in run.bad_lines],
    }
    # "<" escaped so no string in the data can close the <script> element
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=str).replace(
        "<", "\\u003c"
    )
    name = html.escape(title or f"trajectories: {run.source}")
    return _TEMPLATE.replace("__TITLE__", name).replace("__DATA__", data)


def write_report(source: str | Path, output: str | Path) -> LoadedRun:
    run = load_run(source)
    Path(output).write_text(render_html(run), encoding="utf-8")
    return run


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --bg:#fff; --fg:#1f2328; --mute:#656d76; --line:#d0d7de; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: var(--fg); background: var(--bg); }
header { padding: 12px 20px; border-bottom: 1px solid var(--line); background: var(--soft); }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 16px 0 8px; }
.mute { color: var(--mute); }
#bad-lines { background: #fff8c5; border: 1px solid #d4a72c; padding: 8px 12px; margin: 8px 0 0;
  border-radius: 6px; }
#filters { display: flex; gap: 12px; padding: 10px 20px; align-items: center; flex-wrap: wrap; }
#filters input, #filters select { font: inherit; padding: 4px 6px; }
main { display: grid; grid-template-columns: minmax(560px, 48%) 1fr; gap: 0; }
#list { overflow: auto; max-height: calc(100vh - 120px); border-right: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
th { position: sticky; top: 0; background: var(--soft); cursor: pointer; user-select: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr { cursor: pointer; } tbody tr:hover { background: #eef4ff; }
tbody tr.selected { background: #ddf4ff; }
.status { padding: 1px 6px; border-radius: 10px; font-size: 12px; }
.s-completed { background: #dafbe1; } .s-error, .s-timeout { background: #ffebe9; }
.s-max_steps, .s-truncated { background: #fff8c5; } .s-running { background: #eee; }
#detail { padding: 12px 20px; overflow: auto; max-height: calc(100vh - 120px); }
.step { border: 1px solid var(--line); border-left-width: 4px; border-radius: 6px;
  margin: 8px 0; }
.step > .head { padding: 4px 8px; background: var(--soft); font-size: 12px; }
.step > .body { padding: 6px 8px; }
.k-observation { border-left-color: #0969da; } .k-thought { border-left-color: #8c959f; }
.k-action, .k-tool_call { border-left-color: #bf8700; }
.k-tool_result { border-left-color: #1a7f37; }
.k-final_answer { border-left-color: #8250df; } .k-error { border-left-color: #cf222e; }
.k-failed { background: #fff5f5; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font: 12px/1.4 ui-monospace,
  SFMono-Regular, Menlo, monospace; }
details > summary { cursor: pointer; color: var(--mute); }
.diff .add { background: #dafbe1; color: #116329; display: block; }
.diff .del { background: #ffebe9; color: #82071e; display: block; }
.diff .hunk { color: #8250df; display: block; } .diff .file { font-weight: bold; display: block; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
.errors li { color: #cf222e; }
</style></head>
<body>
<header><h1>__TITLE__</h1><div id="counts" class="mute"></div><div id="bad-lines" hidden></div>
</header>
<div id="filters">
  <label>search <input id="search" type="search" placeholder="id, text in the trajectory"></label>
  <label>status <select id="status"><option value="">any</option></select></label>
  <label>reward <select id="reward">
    <option value="">any</option><option value="pos">&gt; 0</option>
    <option value="one">&ge; 1</option><option value="zero">= 0</option>
    <option value="none">none</option></select></label>
  <span id="shown" class="mute"></span>
</div>
<main>
<div id="list"><table id="runs"><thead><tr>
  <th data-k="id">id</th><th data-k="status">status</th><th data-k="reward" class="num">reward</th>
  <th data-k="turns" class="num">turns</th><th data-k="tool_calls" class="num">tools</th>
  <th data-k="tokens" class="num">tokens</th><th data-k="duration" class="num">seconds</th>
  <th data-k="llm_seconds" class="num">LLM s</th><th data-k="tool_seconds" class="num">tool s</th>
</tr></thead><tbody></tbody></table></div>
<div id="detail"><p class="mute">Click a trajectory to open it.</p></div>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const FOLD_CHARS = 1500, FOLD_LINES = 25;
const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
const fmt = (v, d) => v == null ? "-" : (typeof v === "number" ? v.toFixed(d) : String(v));
for (const r of DATA.rows) r.haystack = JSON.stringify(r.trajectory).toLowerCase();
const statuses = [...new Set(DATA.rows.map(r => r.status))].sort();
for (const s of statuses) $("#status").append(el("option", {value: s, text: s}));
$("#counts").textContent = `${DATA.rows.length} trajectories from ${DATA.source}`;
if (DATA.bad_lines.length) {
  const box = $("#bad-lines"); box.hidden = false;
  box.append(el("strong", {text: `${DATA.bad_lines.length} unreadable line(s) skipped:`}));
  const ul = el("ul");
  for (const b of DATA.bad_lines)
    ul.append(el("li", {text: `${b.file} line ${b.line}: ${b.reason}`}));
  box.append(ul);
}
let sortKey = null, sortDir = 1, selected = null;
function visible() {
  const q = $("#search").value.trim().toLowerCase(), st = $("#status").value,
        rw = $("#reward").value;
  let rows = DATA.rows.filter(r =>
    (!st || r.status === st) &&
    (!q || r.id.toLowerCase().includes(q) || r.haystack.includes(q)) &&
    (!rw || (rw === "pos" && r.reward > 0) || (rw === "one" && r.reward >= 1) ||
     (rw === "zero" && r.reward === 0) || (rw === "none" && r.reward == null)));
  if (sortKey) rows = rows.slice().sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x == null) return 1; if (y == null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
  });
  return rows;
}
function renderTable() {
  const rows = visible(), body = $("#runs tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr", {"data-id": r.id},
      el("td", {text: r.id}),
      el("td", {}, el("span", {cls: "status s-" + r.status, text: r.status})),
      el("td", {cls: "num", text: fmt(r.reward, 2)}), el("td", {cls: "num", text: r.turns}),
      el("td", {cls: "num", text: r.tool_calls}), el("td", {cls: "num", text: r.tokens}),
      el("td", {cls: "num", text: fmt(r.duration, 1)}),
      el("td", {cls: "num", text: fmt(r.llm_seconds, 1)}),
      el("td", {cls: "num", text: fmt(r.tool_seconds, 1)}));
    if (r.id === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => { location.hash = "t=" + encodeURIComponent(r.id); });
    body.append(tr);
  }
  $("#shown").textContent = `showing ${rows.length} of ${DATA.rows.length}`;
}
function folded(text, label) {
  const s = String(text ?? ""), lines = s.replace(/\n$/, "").split("\n").length;
  const pre = el("pre", {text: s});
  if (s.length <= FOLD_CHARS && lines <= FOLD_LINES) return pre;
  return el("details", {cls: "fold"},
    el("summary", {text: `${label}: ${lines} lines, ${s.length} characters (click to unfold)`}),
    pre);
}
function diffView(patch) {
  const pre = el("pre", {cls: "diff"});
  for (const line of patch.split("\n")) {
    let cls = "";
    if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff "))
      cls = "file";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    else if (line.startsWith("@@")) cls = "hunk";
    pre.append(cls ? el("span", {cls, text: line}) : document.createTextNode(line + "\n"));
  }
  return pre;
}
function stepView(s) {
  const kind = s.step_type;
  let head = `turn ${s.turn} · ${kind}`;
  if (s.tool_name) head += ` · ${s.tool_name}`;
  if (s.success === false) head += " · failed";
  if (s.duration != null) head += ` · ${s.duration.toFixed(2)}s`;
  const body = el("div", {cls: "body"});
  if (kind === "tool_call") {
    const args = s.tool_args != null ? JSON.stringify(s.tool_args, null, 2) : s.content;
    body.append(folded(args, "arguments"));
  } else {
    body.append(folded(s.content, kind === "tool_result" ? "output" : "text"));
  }
  if (kind === "error" && s.metadata && s.metadata.reply != null)
    body.append(el("div", {cls: "mute", text: "model reply:"}), folded(s.metadata.reply, "reply"));
  const cls = "step k-" + kind + (s.success === false ? " k-failed" : "");
  return el("div", {cls}, el("div", {cls: "head", text: head}), body);
}
function kv(obj) {
  const d = el("div", {cls: "kv"});
  for (const [k, v] of Object.entries(obj))
    d.append(el("span", {cls: "mute", text: k}),
             folded(typeof v === "string" ? v : JSON.stringify(v, null, 2), k));
  return d;
}
function renderDetail(id) {
  selected = id;
  const r = DATA.rows.find(x => x.id === id), box = $("#detail");
  box.replaceChildren();
  if (!r) { box.append(el("p", {cls: "mute", text: "Click a trajectory to open it."})); return; }
  const t = r.trajectory;
  box.append(el("h2", {id: "detail-title", text: t.request_id}));
  box.append(kv({status: t.status, reward: r.reward == null ? "-" : String(r.reward),
                 agent: t.agent_type, turns: String(r.turns), tokens: String(r.tokens),
                 seconds: fmt(r.duration, 1)}));
  if (t.errors.length) {
    box.append(el("h2", {text: "Errors"}));
    const ul = el("ul", {cls: "errors"});
    for (const e of t.errors) ul.append(el("li", {text: `${e.type}: ${e.message}`}));
    box.append(ul);
  }
  if (t.final_response != null)
    box.append(el("h2", {text: "Final response"}), folded(t.final_response, "final response"));
  if (Object.keys(t.reward_details || {}).length)
    box.append(el("h2", {text: "Reward details"}), kv(t.reward_details));
  if (r.patch) box.append(el("h2", {text: "Patch"}), diffView(r.patch));
  box.append(el("h2", {text: `Steps (${t.steps.length})`}));
  const steps = el("div", {id: "steps"});
  for (const s of t.steps) steps.append(stepView(s));
  if (!t.steps.length) steps.append(el("p", {cls: "mute", text: "No steps were stored."}));
  box.append(steps);
  if (t.retries.length) {
    box.append(el("h2", {text: `LLM retries (${t.retries.length})`}));
    const ul = el("ul");
    for (const x of t.retries) {
      const wait = x.wait_seconds.toFixed(1);
      ul.append(el("li", {text: `attempt ${x.attempt}: ${x.error} (waited ${wait}s)`}));
    }
    box.append(ul);
  }
  const meta = Object.fromEntries(Object.entries(t.metadata || {}).filter(([k]) => k !== "patch"));
  if (Object.keys(meta).length) box.append(el("h2", {text: "Metadata"}), kv(meta));
  renderTable();
}
for (const th of document.querySelectorAll("#runs th")) {
  th.addEventListener("click", () => {
    const k = th.dataset.k; sortDir = sortKey === k ? -sortDir : 1; sortKey = k; renderTable();
  });
}
for (const id of ["#search", "#status", "#reward"]) $(id).addEventListener("input", renderTable);
function route() {
  const m = location.hash.match(/^#t=(.*)$/);
  renderDetail(m ? decodeURIComponent(m[1]) : null);
}
window.addEventListener("hashchange", route);
renderTable(); route();
</script>
</body></html>
"""
