"""The search page: one HTML document with a little vanilla JavaScript, no build step."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vsearch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa}
#drop{border:2px dashed #999;padding:1em;text-align:center;margin-bottom:.5em}
#drop.over{background:#eef}
form{display:flex;gap:.8em;flex-wrap:wrap;align-items:center;margin-bottom:.8em}
#results{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.6em}
.hit{background:#fff;border:1px solid #ddd;padding:.3em;font-size:.8em;word-break:break-all}
.hit img{width:100%;height:180px;object-fit:contain;cursor:pointer;background:#eee}
.hit button{font-size:.9em}.judged{outline:2px solid #4a4}#msg{color:#a00}
</style></head><body>
<h1>vsearch</h1>
<div id="drop">Drop a photo here, or <input type="file" id="file" accept="image/*"></div>
<form id="opts" onsubmit="return false">
<label id="textbox" hidden>Text <input id="text" size="30"> <button id="go">Search</button></label>
<label>k <input id="k" type="number" value="20" min="1" max="200" style="width:4em"></label>
<label><input id="self" type="checkbox" checked> exclude self</label>
<label>path <input id="path" placeholder="*.jpg" size="12"></label>
<label>diverse <input id="diverse" placeholder="0..1" size="4"></label>
</form>
<div id="msg"></div><div id="results"></div>
<script>
const CSRF = "{{CSRF}}", TEXT = {{TEXT}};
let current = null, last = null;
const $ = id => document.getElementById(id);
if (TEXT) $("textbox").hidden = false;
function params() {
  const p = new URLSearchParams({k: $("k").value, exclude_self: $("self").checked ? "1" : "0"});
  if ($("path").value) p.set("path", $("path").value);
  if ($("diverse").value) p.set("diverse", $("diverse").value);
  return p;
}
async function post(url, body, type) {
  return fetch(url, {method: "POST", body, headers: {"Content-Type": type, "X-CSRF-Token": CSRF}});
}
async function show(resp) {
  const data = await resp.json();
  if (!resp.ok) { $("msg").textContent = data.error || resp.statusText; return; }
  $("msg").textContent = ""; current = data.query;
  const box = $("results"); box.innerHTML = "";
  for (const r of data.results) {
    const d = document.createElement("div"); d.className = "hit";
    const img = document.createElement("img"); img.src = r.thumb; img.loading = "lazy"; img.title = "search by this photo";
    img.onclick = () => { log("click", [r]); byRow(r.row); };
    const cap = document.createElement("div"); cap.textContent = `${r.rank}. ${r.score.toFixed(3)} ${r.path}`;
    const yes = document.createElement("button"); yes.textContent = "relevant";
    const no = document.createElement("button"); no.textContent = "not relevant";
    yes.onclick = () => judge(r, "relevant", d); no.onclick = () => judge(r, "not-relevant", d);
    const open = document.createElement("a"); open.href = r.image; open.target = "_blank"; open.textContent = "open";
    d.append(img, cap, yes, " ", no, " ", open); box.append(d);
  }
  if (data.results.length) log("impression", data.results);
}
function log(kind, results) {
  post("/api/event", JSON.stringify({kind, query: current, results: results.map(r => ({row: r.row, rank: r.rank}))}),
       "application/json");
}
async function judge(r, label, el) {
  const resp = await post("/api/judgment", JSON.stringify({query: current, row: r.row, label}), "application/json");
  if (resp.ok) el.className = "hit judged"; else $("msg").textContent = (await resp.json()).error;
}
function byRow(row) { last = () => byRow(row); const p = params(); p.set("row", row); fetch("/api/search?" + p).then(show); }
function byText() { const t = $("text").value; last = byText; const p = params(); p.set("text", t); fetch("/api/search?" + p).then(show); }
function byFile(f) { last = () => byFile(f); post("/api/search?" + params(), f, f.type || "application/octet-stream").then(show); }
$("file").onchange = e => e.target.files[0] && byFile(e.target.files[0]);
$("go").onclick = byText;
const drop = $("drop");
drop.ondragover = e => { e.preventDefault(); drop.className = "over"; };
drop.ondragleave = () => drop.className = "";
drop.ondrop = e => { e.preventDefault(); drop.className = ""; e.dataTransfer.files[0] && byFile(e.dataTransfer.files[0]); };
for (const id of ["k", "self", "path", "diverse"]) $(id).onchange = () => last && last();
</script></body></html>
"""
