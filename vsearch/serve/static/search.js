// The search page: every search is a URL (/?row=N, /?q=words, /?upload=DIGEST, with its options),
// so Back, Forward and Reload search again and a search can be opened in another tab.
// Every search is a POST: the server logs what it shows (the click log), so a GET never searches.
"use strict";
const CSRF = document.body.dataset.csrf, TEXT = document.body.dataset.text === "true";
const $ = id => document.getElementById(id);
const DEFAULT_K = "20";
let shown = null;      // the answer on screen: {query, query_id, results, search}
let sequence = 0;      // a newer search wins over an older one still answering
let view = null;       // the result open in the large view: {index, ms, since}
let opener = null;     // what had the focus when the large view opened

function post(url, body, type) {
  return fetch(url, {method: "POST", body, headers: {"Content-Type": type, "X-CSRF-Token": CSRF}});
}
function say(text, kind) { $("msg").textContent = text || ""; $("msg").className = "msg " + (kind || ""); }
function bytes(n) {
  return n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : n >= 1024 ? Math.round(n / 1024) + " KB" : n + " bytes";
}
function baseName(path) { return path.split("/").pop(); }

// --- searches as URLs ------------------------------------------------------------------------

// The search a URL names ({kind: "row" | "text" | "upload", value}), or null; its options go to the form.
function fromURL() {
  const p = new URLSearchParams(location.search);
  $("k").value = p.get("k") || DEFAULT_K;
  $("self").checked = p.get("self") !== "0";
  $("path").value = p.get("path") || "";
  $("diverse").value = p.get("diverse") || "";
  if (p.has("row")) return {kind: "row", value: p.get("row")};
  if (p.has("q")) return {kind: "text", value: p.get("q")};
  if (p.has("upload")) return {kind: "upload", value: p.get("upload")};
  return null;
}
function urlOf(search) {
  const p = new URLSearchParams();
  p.set({row: "row", text: "q", upload: "upload"}[search.kind], search.value);
  if ($("k").value && $("k").value !== DEFAULT_K) p.set("k", $("k").value);
  if (!$("self").checked) p.set("self", "0");
  if ($("path").value) p.set("path", $("path").value);
  if ($("diverse").value) p.set("diverse", $("diverse").value);
  return "/?" + p;
}
function apiParams() {
  const p = new URLSearchParams({k: $("k").value || DEFAULT_K, exclude_self: $("self").checked ? "1" : "0"});
  if ($("path").value) p.set("path", $("path").value);
  if ($("diverse").value) p.set("diverse", $("diverse").value);
  return p;
}
// Search, and make it the page's URL: "push" a new history entry, "replace" this one, or none.
async function search(what, how) {
  const mine = ++sequence, p = apiParams();
  if (how && what.kind !== "file") history[how === "push" ? "pushState" : "replaceState"](null, "", urlOf(what));
  say(what.kind === "file" ? "Searching by " + what.file.name + "…" : "Searching…");
  let resp;
  try {
    if (what.kind === "file") {
      resp = await post("/api/search?" + p, what.file, what.file.type || "application/octet-stream");
    } else {
      p.set({row: "row", text: "text", upload: "upload"}[what.kind], what.value);
      resp = await post("/api/search?" + p, "", "text/plain");
    }
  } catch (e) { if (mine === sequence) say("The server did not answer: is vsearch serve still running?", "bad"); return; }
  const data = await resp.json().catch(() => ({error: resp.statusText}));
  if (mine !== sequence) return;
  if (!resp.ok) { say(data.error || resp.statusText, "bad"); return; }
  if (what.kind === "file") {  // the server keeps the upload for this session: its URL is its digest
    what = {kind: "upload", value: data.query};
    if (how) history[how === "push" ? "pushState" : "replaceState"](null, "", urlOf(what));
  }
  say(data.results.length ? "" : "No results.");
  shown = {...data, search: what};
  $("note").hidden = !data.logging; $("note").textContent = data.logging || "";  // the click log is off: why
  showQuery(what, data.query);
  showResults(data.results);
  restoreJudgments(data.query, mine);
}

// --- the query panel ----------------------------------------------------------------------------

function showQuery(what, key) {
  const fig = $("qfig"), img = $("qimg"), cap = $("qcap");
  $("qtext").hidden = what.kind !== "text";
  fig.hidden = what.kind === "text";
  $("query-h").textContent = what.kind === "text" ? "Searching for" : "Searching by this photo";
  if (what.kind === "text") { $("qtext").textContent = "\u201c" + what.value + "\u201d"; $("text").value = what.value; return; }
  const row = what.kind === "row" ? what.value : null;
  img.src = row !== null ? `/thumb/${row}/${key}` : `/upload/${key}`;
  img.alt = "the photo searched by";
  cap.textContent = row !== null ? "" : "your upload";
  // Its path, when the library holds it: by its row, or (an upload) by its bytes.
  const p = new URLSearchParams({digest: key}); if (row !== null) p.set("row", row);
  fetch("/api/photo?" + p).then(r => r.ok ? r.json() : null).then(info => {
    if (!shown || shown.query !== key) return;
    if (info && info.path) { cap.textContent = (row !== null ? "" : "your upload, already in the library as ") + info.path;
                cap.title = info.path; img.alt = "the photo searched by: " + info.path; }
    else if (row === null) cap.textContent = "your upload (not in the library)";
  }).catch(() => {});
}

// --- the results -----------------------------------------------------------------------------

function showResults(results) {
  const box = $("results"); box.textContent = "";
  $("empty").hidden = true;
  results.forEach((r, i) => {
    const li = document.createElement("li"); li.className = "hit"; li.dataset.path = r.path;
    li.dataset.testid = "result"; li.dataset.row = r.row; li.dataset.digest = r.digest || "";
    const open = document.createElement("button"); open.className = "open"; open.type = "button";
    open.setAttribute("aria-label", `Open ${baseName(r.path)} large (result ${r.rank}, score ${r.score.toFixed(3)})`);
    const img = document.createElement("img"); img.className = "thumb"; img.alt = r.path; img.loading = "lazy";
    if (r.thumb) img.src = r.thumb;
    open.append(img);
    open.onclick = () => { log("click", [r]); openView(i, open); };
    const line = document.createElement("div"); line.className = "line";
    const score = document.createElement("span"); score.className = "score"; score.textContent = `${r.rank}. ${r.score.toFixed(3)}`;
    const name = document.createElement("span"); name.className = "name ellipsis"; name.textContent = baseName(r.path);
    name.title = r.path;
    line.append(score, " ", name);
    const judge = document.createElement("div"); judge.className = "judge";
    const yes = document.createElement("button"), no = document.createElement("button");
    yes.type = no.type = "button"; yes.className = "yes"; no.className = "no";
    yes.textContent = "relevant"; no.textContent = "not relevant";
    yes.setAttribute("aria-pressed", "false"); no.setAttribute("aria-pressed", "false");
    const verdict = document.createElement("span"); verdict.className = "verdict"; verdict.setAttribute("aria-hidden", "true");
    yes.onclick = () => judgeResult(r, "relevant", li); no.onclick = () => judgeResult(r, "not-relevant", li);
    judge.append(yes, no, verdict);
    li.append(open, line, judge); box.append(li);
  });
}
// Impressions are logged by the server as it answers a search; a click names that list's id.
// A search the server could not log (see #note) has no id: its clicks are not logged either.
function log(kind, results) {
  if (!shown || shown.query_id === null || shown.query_id === undefined) return;
  post("/api/event", JSON.stringify({kind, query: shown.query, query_id: shown.query_id,
                                     results: results.map(r => ({row: r.row, rank: r.rank}))}), "application/json")
    .catch(() => {});
}
function markJudged(li, label) {
  li.className = "hit judged";
  li.querySelector(".yes").setAttribute("aria-pressed", String(label === "relevant"));
  li.querySelector(".no").setAttribute("aria-pressed", String(label === "not-relevant"));
  li.querySelector(".verdict").textContent = label === "relevant" ? "\u2713 relevant" : "\u2717 not relevant";
  li.dataset.label = label;
}
async function judgeResult(r, label, li) {
  const resp = await post("/api/judgment", JSON.stringify({query: shown.query, row: r.row, label}), "application/json");
  if (!resp.ok) { say((await resp.json().catch(() => ({}))).error || resp.statusText, "bad"); return; }
  markJudged(li, label);
  say(`Marked ${baseName(r.path)} ${label === "relevant" ? "relevant" : "not relevant"} for this search: kept for evaluation.`, "good");
}
// What was judged before for this query shows again (after Reload, Back, in another tab).
async function restoreJudgments(key, mine) {
  const resp = await fetch("/api/judged?" + new URLSearchParams({query: key})).catch(() => null);
  if (!resp || !resp.ok || mine !== sequence) return;
  const judged = (await resp.json()).judged;
  for (const li of $("results").children) if (judged[li.dataset.digest]) markJudged(li, judged[li.dataset.digest]);
}

// --- the large view --------------------------------------------------------------------------

const box = $("lightbox");
function openView(i, from) {
  opener = from || document.activeElement;
  if (!box.open) box.showModal();
  showView(i);
  $("lb-close").focus();
}
function showView(i) {
  endView();
  const results = shown.results, r = results[i];
  view = {index: i, ms: 0, since: document.visibilityState === "visible" ? performance.now() : null};
  $("lb-title").textContent = baseName(r.path);
  $("lb-count").textContent = `${r.rank} of ${results.length}`;
  $("lb-img").src = r.image || r.thumb || "";
  $("lb-img").alt = r.path;
  $("lb-open").href = r.image || "#";
  $("lb-prev").disabled = i === 0; $("lb-next").disabled = i === results.length - 1;
  facts([["Path", r.path], ["Score", r.score.toFixed(3)], ["Size", "…"], ["Pixels", "…"], ["Taken", "…"]]);
  fetch(`/api/photo?row=${r.row}&digest=${r.digest}`).then(x => x.ok ? x.json() : null).then(info => {
    if (!view || view.index !== i || !info) return;
    facts([["Path", info.path], ["Score", r.score.toFixed(3)], ["Size", bytes(info.bytes)],
           ["Pixels", info.width ? `${info.width} \u00d7 ${info.height} (${(info.width * info.height / 1e6).toFixed(1)} MP)` : "unknown"],
           ["Taken", info.taken ? new Date(info.taken).toLocaleString() : "not recorded"]]);
  }).catch(() => {});
}
function facts(rows) {
  const dl = $("lb-facts"); dl.textContent = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v; dd.title = v; dl.append(dt, dd);
  }
}
// How long a result was looked at, counted only while the page was visible; sent as it closes
// (or the view moves on). The server may not know "dwell" yet: fire and forget.
function endView() {
  if (!view || !shown) { view = null; return; }
  const r = shown.results[view.index];
  const ms = Math.round(view.ms + (view.since !== null ? performance.now() - view.since : 0));
  view = null;
  if (shown.query_id === null || shown.query_id === undefined) return;
  fetch("/api/event", {method: "POST", keepalive: true,
                       headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
                       body: JSON.stringify({kind: "dwell", query: shown.query, query_id: shown.query_id,
                                             row: r.row, rank: r.rank, ms})}).catch(() => {});
}
document.addEventListener("visibilitychange", () => {
  if (!view) return;
  if (document.visibilityState === "visible") view.since = performance.now();
  else if (view.since !== null) { view.ms += performance.now() - view.since; view.since = null; }
});
function step(d) {
  if (!view) return;
  const i = view.index + d;
  if (i >= 0 && i < shown.results.length) showView(i);
}
box.addEventListener("close", () => {
  const i = view ? view.index : null;
  endView();
  // The focus goes back to the result last shown (the one opened, or where the arrows led).
  const card = i !== null ? $("results").children[i] : null;
  const target = card ? card.querySelector(".open") : opener;
  if (target && target.isConnected) target.focus();
});
box.addEventListener("keydown", e => {
  if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
  else if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
  else if (e.key === "Tab") {  // the focus stays in the dialog
    const f = [...box.querySelectorAll("button, a[href], input, select")].filter(x => !x.disabled && x.offsetParent !== null);
    if (!f.length) return;
    const first = f[0], last = f[f.length - 1];
    if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
    else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
  }
});
box.addEventListener("click", e => { if (e.target === box) box.close(); });  // a click on the backdrop
$("lb-close").onclick = () => box.close();
$("lb-prev").onclick = () => step(-1);
$("lb-next").onclick = () => step(1);
$("lb-similar").onclick = () => {
  const r = shown.results[view.index];
  box.close();
  search({kind: "row", value: String(r.row)}, "push").then(() => $("results").focus());
};

// --- is this already in my library? -------------------------------------------------------------

async function checkLibrary(files) {
  const list = $("libresults"); list.textContent = "";
  for (const f of files) {
    const li = document.createElement("li"); li.className = "libitem";
    const name = document.createElement("span"); name.className = "ellipsis libname"; name.textContent = f.name; name.title = f.name;
    const what = document.createElement("span"); what.className = "libstatus"; what.textContent = "checking…";
    li.append(name, what); list.append(li);
  }
  let i = 0;
  for (const f of files) {  // one at a time: each is embedded (and maybe verified) on the server
    const li = list.children[i++], what = li.querySelector(".libstatus");
    let resp, data;
    try {
      resp = await post("/api/library-check?" + new URLSearchParams({level: $("liblevel").value}), f,
                        f.type || "application/octet-stream");
      data = await resp.json();
    } catch (e) { what.textContent = "the server did not answer"; li.dataset.status = "error"; continue; }
    if (!resp.ok) { what.textContent = data.error || resp.statusText; li.dataset.status = "error"; li.classList.add("bad"); continue; }
    li.dataset.status = data.status;
    if (data.status === "present") {
      const m = data.match, level = {exact: "the same file", near: "a copy of it", similar: "a photo like it"}[data.level] || data.level;
      what.textContent = `already there (${data.level}: ${level})` + (m ? ": " + m.path : "");
      what.title = m ? m.path : "";
      li.classList.add("present");
      if (m) {
        const img = document.createElement("img"); img.className = "thumb libthumb"; img.src = m.thumb;
        img.alt = "the library's photo: " + m.path; li.prepend(img);
      }
    } else if (data.status === "new") { what.textContent = "new: not in the library"; li.classList.add("new"); }
    else { what.textContent = "cannot be read" + (data.reason ? ": " + data.reason : ""); li.classList.add("bad"); }
  }
}
$("libfile").onchange = e => { if (e.target.files.length) checkLibrary([...e.target.files]); };

// --- dropping photos -------------------------------------------------------------------------

function images(dt) { return [...(dt && dt.files || [])].filter(f => !f.type || f.type.startsWith("image/")); }
document.addEventListener("dragover", e => {
  e.preventDefault();
  const lib = e.target.closest && e.target.closest("#libdrop");
  document.body.classList.toggle("over", !lib); $("libdrop").classList.toggle("over", !!lib);
});
document.addEventListener("dragleave", e => {
  if (e.relatedTarget === null) { document.body.classList.remove("over"); $("libdrop").classList.remove("over"); }
});
document.addEventListener("drop", e => {
  e.preventDefault();
  document.body.classList.remove("over"); $("libdrop").classList.remove("over");
  const files = images(e.dataTransfer);
  if (!files.length) return;
  if (e.target.closest && e.target.closest("#libdrop")) checkLibrary(files);
  else search({kind: "file", file: files[0]}, "push");
});

// --- the controls ----------------------------------------------------------------------------

$("file").onchange = e => { if (e.target.files[0]) search({kind: "file", file: e.target.files[0]}, "push"); };
if (TEXT) $("textform").hidden = false;
$("textform").onsubmit = e => {
  e.preventDefault();
  const t = $("text").value.trim();
  if (t) search({kind: "text", value: t}, "push");
};
$("opts").onsubmit = e => e.preventDefault();
for (const id of ["k", "self", "path", "diverse"]) {
  $(id).onchange = () => { if (shown) search(shown.search, "replace"); };
}
window.addEventListener("popstate", () => {
  if (box.open) box.close();
  const what = fromURL();
  if (what) search(what, null);
  else { shown = null; $("results").textContent = ""; $("empty").hidden = false; $("qfig").hidden = true; $("qtext").hidden = true; say(""); }
});
const first = fromURL();
if (first) search(first, null);
