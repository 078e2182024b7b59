"""The two pages: each one HTML document with a little vanilla JavaScript, no build step.

``{{CSRF}}`` is replaced by the session's token, ``{{TEXT}}`` by whether text search works.
"""

#: The link bar both pages start with.
NAV = '<nav><a href="/">Search</a> &middot; <a href="/duplicates">Duplicates</a></nav>'

SEARCH_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vsearch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa}
nav{margin-bottom:.5em}
#drop{border:2px dashed #999;padding:1em;text-align:center;margin-bottom:.5em}
#drop.over{background:#eef}
form{display:flex;gap:.8em;flex-wrap:wrap;align-items:center;margin-bottom:.8em}
#results{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.6em}
.hit{background:#fff;border:1px solid #ddd;padding:.3em;font-size:.8em;word-break:break-all}
.hit img{width:100%;height:180px;object-fit:contain;cursor:pointer;background:#eee}
.hit button{font-size:.9em}.judged{outline:2px solid #4a4}#msg{color:#a00}
#note{background:#fff3cd;border:1px solid #e0c060;padding:.3em .5em;margin-bottom:.5em}
</style></head><body>
{{NAV}}
<h1>vsearch</h1>
<div id="drop">Drop a photo here, or <input type="file" id="file" accept="image/*"></div>
<form id="opts" onsubmit="return false">
<label id="textbox" hidden>Text <input id="text" size="30"> <button id="go">Search</button></label>
<label>k <input id="k" type="number" value="20" min="1" max="200" style="width:4em"></label>
<label><input id="self" type="checkbox" checked> exclude self</label>
<label>path <input id="path" placeholder="*.jpg" size="12"></label>
<label>diverse <input id="diverse" placeholder="0..1" size="4"></label>
</form>
<div id="note" hidden></div><div id="msg"></div><div id="results"></div>
<script>
const CSRF = "{{CSRF}}", TEXT = {{TEXT}};
let current = null, currentId = null, last = null;
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
  $("msg").textContent = ""; current = data.query; currentId = data.query_id;
  $("note").hidden = !data.logging; $("note").textContent = data.logging || "";  // the click log is off: why
  const box = $("results"); box.innerHTML = "";
  for (const r of data.results) {
    const d = document.createElement("div"); d.className = "hit"; d.dataset.path = r.path;
    const img = document.createElement("img"); if (r.thumb) img.src = r.thumb; img.loading = "lazy"; img.title = "search by this photo";
    img.onclick = () => { log("click", [r]); byRow(r.row); };
    const cap = document.createElement("div"); cap.textContent = `${r.rank}. ${r.score.toFixed(3)} ${r.path}`;
    const yes = document.createElement("button"); yes.textContent = "relevant";
    const no = document.createElement("button"); no.textContent = "not relevant";
    yes.onclick = () => judge(r, "relevant", d); no.onclick = () => judge(r, "not-relevant", d);
    const open = document.createElement("a"); open.href = r.image; open.target = "_blank"; open.textContent = "open";
    d.append(img, cap, yes, " ", no, " ", open); box.append(d);
  }
}
// Impressions are logged by the server as it answers a search; a click names that list's id.
// A search the server could not log (see #note) has no id: its clicks are not logged either.
function log(kind, results) {
  if (currentId === null || currentId === undefined) return;
  post("/api/event", JSON.stringify({kind, query: current, query_id: currentId,
                                     results: results.map(r => ({row: r.row, rank: r.rank}))}),
       "application/json");
}
async function judge(r, label, el) {
  const resp = await post("/api/judgment", JSON.stringify({query: current, row: r.row, label}), "application/json");
  if (resp.ok) el.className = "hit judged"; else $("msg").textContent = (await resp.json()).error;
}
// Every search is a POST: the server logs what it shows (the click log), so a GET never searches.
function byRow(row) { last = () => byRow(row); const p = params(); p.set("row", row); post("/api/search?" + p, "", "text/plain").then(show); }
function byText() { const t = $("text").value; last = byText; const p = params(); p.set("text", t); post("/api/search?" + p, "", "text/plain").then(show); }
function byFile(f) { last = () => byFile(f); post("/api/search?" + params(), f, f.type || "application/octet-stream").then(show); }
$("file").onchange = e => e.target.files[0] && byFile(e.target.files[0]);
$("go").onclick = byText;
const drop = $("drop");
drop.ondragover = e => { e.preventDefault(); drop.className = "over"; };
drop.ondragleave = () => drop.className = "";
drop.ondrop = e => { e.preventDefault(); drop.className = ""; e.dataTransfer.files[0] && byFile(e.dataTransfer.files[0]); };
for (const id of ["k", "self", "path", "diverse"]) $(id).onchange = () => last && last();
</script></body></html>
""".replace("{{NAV}}", NAV)

DUPLICATES_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vsearch: duplicates</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa}
nav{margin-bottom:.5em}
form{display:flex;gap:.8em;flex-wrap:wrap;align-items:center;margin-bottom:.8em}
.group{background:#fff;border:1px solid #ddd;padding:.5em;margin-bottom:1em}
.group h2{font-size:1em;margin:.2em 0 .5em}
.members{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.6em}
.member{border:2px solid #e8b070;padding:.3em;font-size:.8em;word-break:break-all}
.member.keeper{border-color:#4a4}
.member img{width:100%;height:160px;object-fit:contain;background:#eee;cursor:zoom-in}
.acts{margin-top:.5em;display:flex;gap:.5em}
#msg.bad{color:#a00}#msg.good{color:#060}
</style></head><body>
{{NAV}}
<h1>Duplicates</h1>
<form id="opts" onsubmit="return false">
<label>level <select id="level"><option value="exact">exact (same bytes)</option>
<option value="near" selected>near (verified copies)</option><option value="similar">similar (looks alike)</option></select></label>
<label>keep <select id="keep"><option>default</option><option>pixels</option><option>largest</option><option>smallest</option>
<option>oldest</option><option>newest</option><option>shortest-path</option></select></label>
<label>threshold <input id="threshold" placeholder="auto" size="5"></label>
<button id="find">Find duplicates</button>
<label>move copies to <input id="moveto" placeholder="/full/path/of/a/folder" size="30"></label>
<button id="undo" title="Put back what the last move or trash moved">Undo the last action</button>
</form>
<div id="msg"></div><p id="count"></p><div id="groups"></div>
<script>
const CSRF = "{{CSRF}}";
const $ = id => document.getElementById(id);
let shown = null;  // the last answer: actions name groups as it showed them
function say(text, bad) { $("msg").textContent = text; $("msg").className = bad ? "bad" : "good"; }
function query() {
  return {level: $("level").value, keep: $("keep").value, threshold: $("threshold").value || null};
}
async function post(url, body) {
  const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
                              headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF}});
  return [r.ok, await r.json()];
}
async function load(fresh) {
  $("groups").textContent = "finding duplicates..."; $("count").textContent = "";
  // A POST: finding near duplicates takes seconds, and fresh looks again even when they are known.
  const [ok, data] = await post("/api/duplicates", {...query(), fresh: fresh === true});
  $("groups").textContent = "";
  if (!ok) { say(data.error, true); return; }
  shown = data;
  $("count").textContent = data.total ? `${data.total} group${data.total > 1 ? "s" : ""}` +
    (data.total > data.groups.length ? `, the largest ${data.groups.length} shown` : "") : "No duplicates at this level.";
  for (const g of data.groups) $("groups").append(groupBox(g));
}
function bytes(n) { return n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : Math.round(n / 1024) + " KB"; }
function line(text) { const d = document.createElement("div"); d.textContent = text; return d; }
function groupBox(g) {
  const sec = document.createElement("section"); sec.className = "group"; sec.dataset.group = g.number;
  const h = document.createElement("h2"); h.textContent = `Group ${g.number}: ${g.members.length} images, ${g.level}`;
  const grid = document.createElement("div"); grid.className = "members";
  const cards = [];
  for (const m of g.members) {
    const d = document.createElement("div"); d.className = "member"; d.dataset.path = m.path;
    const img = document.createElement("img"); img.src = m.thumb; img.loading = "lazy"; img.title = "open the full image";
    img.onclick = () => window.open(m.image, "_blank");
    const pick = document.createElement("label"), radio = document.createElement("input");
    radio.type = "radio"; radio.name = "keep-" + g.number; radio.value = m.row; radio.checked = m.keeper;
    radio.onchange = () => update();
    pick.append(radio, m.keeper ? " keep (suggested)" : " keep");
    const nd = document.createElement("button"); nd.textContent = "not a duplicate"; nd.className = "notdup";
    nd.title = "this image is not a copy of the kept one: keep them apart from now on";
    nd.onclick = () => notDuplicate(keeper(), m);
    d.append(img, line(m.path), line(`${bytes(m.bytes)} · ${m.pixels ? (m.pixels / 1e6).toFixed(2) + " MP" : "? px"} · ${m.format || "?"}`),
             line(m.keeper ? `${m.level} group` : `${m.level} · cosine ${m.score.toFixed(3)}`), pick, " ", nd);
    cards.push([d, m, nd]); grid.append(d);
  }
  const acts = document.createElement("div"); acts.className = "acts";
  const trash = document.createElement("button"), move = document.createElement("button");
  trash.className = "trash"; move.className = "move";
  trash.onclick = () => act(g, keeper(), "trash"); move.onclick = () => act(g, keeper(), "move");
  acts.append(trash, move);
  function keeper() {
    const r = sec.querySelector("input[type=radio]:checked");
    return g.members.find(m => String(m.row) === r.value);
  }
  function update() {
    const k = keeper(), n = g.members.length - 1, what = n === 1 ? "1 copy" : `${n} copies`;
    for (const [d, m, nd] of cards) { d.classList.toggle("keeper", m === k); nd.hidden = m === k; }
    trash.textContent = `Trash ${what}`; move.textContent = `Move ${what} to the folder`;
  }
  sec.append(h, grid, acts);
  update();
  return sec;
}
async function act(g, k, action) {
  const body = {level: shown.level, keep: shown.keep, threshold: shown.threshold, action, keeper: k.row,
                members: g.members.map(m => ({row: m.row, digest: m.digest}))};
  if (action === "move") body.move_to = $("moveto").value;
  const [ok, data] = await post("/api/duplicates/act", body);
  if (!ok) { say(data.error, true); return; }
  say(data.message); await load();
}
async function notDuplicate(k, m) {
  const [ok, data] = await post("/api/duplicates/not-duplicate",
                                {a: {row: k.row, digest: k.digest}, b: {row: m.row, digest: m.digest}});
  if (!ok) { say(data.error, true); return; }
  say(`recorded: ${m.path} is not a duplicate of ${k.path}`); await load();
}
$("undo").onclick = async () => {
  const [ok, data] = await post("/api/undo", {});
  say(ok ? data.message : data.error, !ok); if (ok) await load();
};
$("find").onclick = () => load(true);  // look again, even if the index did not change
for (const id of ["level", "keep"]) $(id).onchange = () => load();
load();
</script></body></html>
""".replace("{{NAV}}", NAV)
