// The duplicates page. Finding the groups runs on the server in the background: the page starts a
// search (a POST), then asks how far it got (a GET every few hundred ms) and shows the first groups
// as soon as the library settles them. Groups come a page at a time; a person selects groups
// (this page, all pages), picks a keeper rule for all of them or a keeper per group, and acts
// on every selected group with one button: one undo log, so one Undo puts everything back.
"use strict";
const CSRF = document.body.dataset.csrf;
const $ = id => document.getElementById(id);
// Groups a page: 50, or ?per=N in the page's URL (1 to 500).
const PER_PAGE = Math.min(500, Math.max(1, Number(new URLSearchParams(location.search).get("per")) || 50));
// How often the page asks how far the search got: often at first (the first groups), then less.
const pollDelay = () => performance.now() - started < 3000 ? 100 : 300;
//: The threshold each level uses when none is given (the library's defaults).
const DEFAULT_THRESHOLD = {near: 0.80, similar: 0.92};
const THRESHOLD_NOTE = {
  near: "the cosine that shortlists pairs to verify: lower looks at more pairs (slower), higher at fewer",
  similar: "the cosine at which two photos are grouped: higher is stricter",
  exact: "the exact level needs no threshold: only byte-identical files are grouped",
};

let search = null;        // the last answer about the search: {id, running, groups, page, pages, ...}
let pageNumber = 1;
let thresholdSet = false; // whether the person moved the slider (else the library's default)
let selected = new Set(); // group numbers selected (of a finished search)
let allPages = false;     // "select all groups": every group, on every page
const keepers = new Map();// group number -> row of the keeper a person picked
let polling = null;
let started = 0;

function say(text, kind) { $("msg").textContent = text || ""; $("msg").className = "msg " + (kind || ""); }
async function post(url, body) {
  const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
                              headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF}});
  return [r.ok, await r.json()];
}
function bytes(n) {
  return n >= 1048576 ? (n / 1048576).toFixed(1) + " MB" : n >= 1024 ? Math.round(n / 1024) + " KB" : n + " bytes";
}
function plural(n, one, many) { return `${n} ${n === 1 ? one : many}`; }
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children.filter(c => c !== null && c !== undefined));
  return e;
}
function line(text, cls) { return el("div", {className: "line " + (cls || ""), textContent: text}); }

// --- the search -------------------------------------------------------------------------------

function query() {
  const level = $("level").value;
  return {level, keep: $("keep").value,
          threshold: level !== "exact" && thresholdSet ? Number($("threshold").value) : null};
}

function showThreshold() {
  const level = $("level").value, slider = $("threshold");
  slider.disabled = level === "exact";
  if (!thresholdSet && level !== "exact") slider.value = DEFAULT_THRESHOLD[level].toFixed(2);
  $("threshold-out").textContent = level === "exact" ? "not used"
    : Number(slider.value).toFixed(2) + (thresholdSet ? "" : " (default)");
  $("threshold-note").textContent = THRESHOLD_NOTE[level];
}

// Start (or join) the search for the form's query; fresh looks again even when nothing changed.
async function find(fresh) {
  clearTimeout(polling);
  started = performance.now();
  const [ok, data] = await post("/api/duplicates/search", {...query(), fresh: fresh === true});
  if (!ok) { say(data.error, "bad"); return; }
  selected = new Set(); allPages = false; keepers.clear(); pageNumber = 1;
  search = null;  // shown afresh, even when the answer is the search already on screen
  took(data);
}

// One answer about the search: show its progress and groups, and ask again while it runs.
function took(data) {
  const known = search && search.id === data.id && search.page === data.page;
  const changed = !known || search.groups_total !== data.groups_total || search.running !== data.running;
  search = data;
  showProgress(data);
  if (data.error) { say(data.error, "bad"); return; }
  if (changed) showGroups();
  if (data.running) polling = setTimeout(follow, pollDelay());
  else if (data.stale) find();  // the index changed since (an action, a build): find them again
}

async function follow() {
  const r = await fetch(`/api/duplicates/search?id=${encodeURIComponent(search.id)}&page=${pageNumber}&per=${PER_PAGE}`);
  const data = await r.json();
  if (r.status === 409) return;  // another search replaced this one; its own loop follows it
  if (!r.ok) { say(data.error, "bad"); return; }
  took(data);
}

function showProgress(d) {
  const bar = $("bar"), text = $("progress-text");
  bar.max = Math.max(d.total, 1); bar.value = d.running ? d.done : bar.max;
  const found = plural(d.groups_total, "group", "groups");
  if (d.error) text.textContent = "The search stopped: " + d.error;
  else if (!d.running) text.textContent = `Done in ${d.seconds.toFixed(1)} s: ${found}, ` +
    `${plural(d.copies_total, "copy", "copies")} to act on` + (d.verified ? `, ${d.verified} pairs verified` : "") + ".";
  else if (d.step === "group") text.textContent = `Checking candidates: ${d.done} of ${d.total} photos, ` +
    `${d.verified} pairs verified, ${found} so far (shown as they are found; act once done).`;
  else if (d.step === "compare") text.textContent = `Comparing photos with their nearest neighbours: ${d.done} of ${d.total}.`;
  else text.textContent = "Starting the search...";
  document.body.classList.toggle("searching", d.running);
}

// --- the groups -------------------------------------------------------------------------------

function showGroups() {
  const box = $("groups");
  box.textContent = "";
  box.setAttribute("aria-busy", search.running ? "true" : "false");
  if (!search.groups.length && !search.running) box.append(el("p", {textContent: "No duplicates at this level."}));
  for (const g of search.groups) box.append(groupBox(g));
  showPager();
  showSelection();
}

function showPager() {
  for (const nav of document.querySelectorAll(".pager")) {
    nav.textContent = "";
    if (search.pages <= 1) continue;
    const prev = el("button", {type: "button", textContent: "Previous page", disabled: pageNumber <= 1});
    const next = el("button", {type: "button", textContent: "Next page", disabled: pageNumber >= search.pages});
    prev.onclick = () => goTo(pageNumber - 1); next.onclick = () => goTo(pageNumber + 1);
    nav.append(prev, el("span", {className: "muted", textContent: `Page ${pageNumber} of ${search.pages}`}), next);
  }
}

async function goTo(n) {
  clearTimeout(polling);
  pageNumber = n;
  await follow();
  $("groups").scrollIntoView();
}

function groupBox(g) {
  const sec = el("section", {className: "group card"});
  sec.dataset.group = g.number; sec.dataset.testid = "dup-group";
  sec.style.setProperty("--n", Math.min(g.members.length, 6));  // its width in the rows of groups
  const copies = g.members.filter(m => !m.keeper && m.level !== "same-file").length;
  const pick = el("input", {type: "checkbox", className: "select", checked: allPages || selected.has(g.number),
                            disabled: search.running});
  pick.onchange = () => {
    if (allPages && !pick.checked) {  // "all pages" less this one: the page knows every number only per page
      allPages = false;
      selected = new Set(search.all_numbers || []);
    }
    if (pick.checked) selected.add(g.number); else selected.delete(g.number);
    showSelection();
  };
  const title = el("h2", {textContent: `Group ${g.number}: ${plural(g.members.length, "photo", "photos")}, ${g.level}`});
  const head = el("div", {className: "group-head"}, el("label", {}, pick, el("span", {className: "sr-only",
    textContent: `select group ${g.number}`})), title);
  const grid = el("div", {className: "members"});
  const cards = [];
  let keeperRow = keepers.get(g.number) ?? g.members.find(m => m.keeper).row;
  for (const m of g.members) {
    const card = el("div", {className: "member"});
    card.dataset.path = m.path; card.dataset.row = m.row;
    const img = el("img", {className: "thumb", src: m.thumb, loading: "lazy", alt: `photo ${m.path}`});
    const open = el("button", {type: "button", className: "open", title: "compare at full size"}, img);
    open.setAttribute("aria-label", `compare ${m.path} side by side`);
    open.onclick = () => sideBySide(g, m);
    const radio = el("input", {type: "radio", name: "keep-" + g.number, value: m.row, checked: m.row === keeperRow,
                               disabled: search.running});
    radio.onchange = () => { keeperRow = m.row; keepers.set(g.number, m.row); update(); };
    const keep = el("label", {}, radio, m.keeper ? " keep (suggested)" : " keep");
    const compare = el("input", {type: "checkbox", className: "compare"});
    const compareLabel = el("label", {}, compare, " compare");
    const nd = el("button", {type: "button", className: "notdup", textContent: "not a duplicate",
                             title: "this photo is not a copy of the kept one: keep them apart from now on",
                             disabled: search.running});
    nd.onclick = () => notDuplicate(g.members.find(k => k.row === keeperRow), m);
    const size = `${bytes(m.bytes)} · ${m.pixels ? (m.pixels / 1e6).toFixed(2) + " MP" : "? px"} · ${m.format || "?"}`;
    card.append(open, line(m.path, "ellipsis path"), line(size),
                line(m.keeper ? `${m.level} group` : `${m.level} · cosine ${m.score.toFixed(3)}`, "muted"),
                el("div", {className: "line picks"}, keep, compareLabel), nd);
    cards.push([card, m, nd]);
    grid.append(card);
  }
  const trash = el("button", {type: "button", className: "trash", disabled: search.running});
  const move = el("button", {type: "button", className: "move", disabled: search.running});
  const both = el("button", {type: "button", className: "pair", textContent: "Side by side",
                             title: "the two photos ticked 'compare' (else the keeper and its first copy) at full size"});
  trash.onclick = () => actOn(g, keeperRow, "trash");
  move.onclick = () => actOn(g, keeperRow, "move");
  both.onclick = () => {
    const ticked = cards.filter(([c]) => c.querySelector(".compare").checked).map(([, m]) => m);
    const keeper = g.members.find(k => k.row === keeperRow);
    const pair = ticked.length >= 2 ? ticked.slice(0, 2) : ticked.length === 1 && ticked[0] !== keeper
      ? [keeper, ticked[0]] : [keeper, g.members.find(k => k !== keeper)];
    sideBySide(g, pair[1], pair[0]);
  };
  function update() {
    const what = copies === 1 ? "1 copy" : `${copies} copies`;
    for (const [card, m, nd] of cards) { card.classList.toggle("keeper", m.row === keeperRow); nd.hidden = m.row === keeperRow; }
    trash.textContent = `Trash ${what}`; move.textContent = `Move ${what} to the folder`;
  }
  sec.append(head, grid, el("div", {className: "acts"}, both, trash, move));
  update();
  return sec;
}

function showSelection() {
  const total = search ? search.groups_total : 0;
  const n = allPages ? total : selected.size;
  $("count").textContent = search && search.running ? "Selecting opens once the search is done."
    : `${plural(n, "group", "groups")} of ${total} selected` + (allPages ? " (all pages)" : "");
  const action = $("action").value;
  const apply = $("apply");
  apply.disabled = !search || search.running || n === 0;
  apply.textContent = n ? `${action === "trash" ? "Trash" : "Move"} the copies of ${plural(n, "group", "groups")}`
    : "Act on the selected groups";
  for (const id of ["select-page", "select-all", "select-none"]) $(id).disabled = !search || search.running || !total;
  $("moveto-label").hidden = action !== "move";
}

// --- acting -----------------------------------------------------------------------------------

async function applyAll() {
  const n = allPages ? search.groups_total : selected.size, action = $("action").value;
  const where = action === "trash" ? "send their copies to the trash" : `move their copies to ${$("moveto").value}`;
  if (!confirm(`${plural(n, "group", "groups")} selected: ${where}? Undo puts them back.`)) return;
  const body = {search: search.id, action, groups: allPages ? "all" : [...selected],
                keepers: Object.fromEntries(keepers)};
  if (action === "move") body.move_to = $("moveto").value;
  $("apply").disabled = true;
  const [ok, data] = await post("/api/duplicates/apply", body);
  if (!ok) { say(data.error, "bad"); showSelection(); return; }
  say(data.message, "good");
  await find();
}

async function actOn(g, keeperRow, action) {
  const body = {level: search.level, keep: search.keep, threshold: search.threshold, action, keeper: keeperRow,
                members: g.members.map(m => ({row: m.row, digest: m.digest}))};
  if (action === "move") body.move_to = $("moveto").value;
  const [ok, data] = await post("/api/duplicates/act", body);
  if (!ok) { say(data.error, "bad"); return; }
  say(data.message, "good"); await find();
}

async function notDuplicate(k, m) {
  const [ok, data] = await post("/api/duplicates/not-duplicate",
                                {a: {row: k.row, digest: k.digest}, b: {row: m.row, digest: m.digest}});
  if (!ok) { say(data.error, "bad"); return; }
  say(`recorded: ${m.path} is not a duplicate of ${k.path}`, "good"); await find();
}

// --- side by side: two members at full size, zoom and pan moving both --------------------------

const view = {scale: 1, x: 0, y: 0, opener: null};
function place() {
  for (const id of ["sbs-a", "sbs-b"])
    $(id).style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
}
function zoom(factor) { view.scale = Math.min(40, Math.max(0.2, view.scale * factor)); view.x *= factor; view.y *= factor; place(); }
function fit() { view.scale = 1; view.x = 0; view.y = 0; place(); }
function fullSize() {  // one image pixel to one screen pixel, for the larger photo
  const a = $("sbs-a"), b = $("sbs-b");
  const ratio = Math.max(a.naturalWidth / Math.max(a.clientWidth, 1), b.naturalWidth / Math.max(b.clientWidth, 1));
  view.x = 0; view.y = 0; view.scale = Math.max(1, ratio); place();
}
function pan(dx, dy) { view.x += dx; view.y += dy; place(); }

async function sideBySide(g, m, first) {
  const keeperRow = keepers.get(g.number) ?? g.members.find(x => x.keeper).row;
  let a = first || g.members.find(k => k.row === keeperRow);
  if (a.row === m.row) a = g.members.find(k => k.row !== m.row);  // the keeper itself: against its first copy
  const b = m;
  view.opener = document.activeElement;
  fit();
  for (const [id, x] of [["sbs-a", a], ["sbs-b", b]]) {
    $(id).src = x.image; $(id).alt = `full size: ${x.path}`;
    $(id + "-cap").textContent = (x.row === a.row ? "A: " : "B: ") + x.path;
  }
  $("sbs-diff").replaceChildren(el("caption", {textContent: "How the two files differ"}));
  $("sbs-why").textContent = "Explaining the pair...";
  $("sbs").showModal();
  $("sbs-panes").focus();
  const [ok, why] = await post("/api/duplicates/explain", {a: {row: a.row, digest: a.digest}, b: {row: b.row, digest: b.digest},
                                                          level: search.level === "exact" ? "near" : search.level,
                                                          threshold: search.threshold});
  const dims = n => ok && why.size[n] ? `${why.size[n][0]} × ${why.size[n][1]}` : "?";
  const rows = [["", "A", "B"], ["file", a.path, b.path], ["file size", bytes(a.bytes), bytes(b.bytes)],
    ["pixels", a.pixels ? `${(a.pixels / 1e6).toFixed(2)} MP` : "?", b.pixels ? `${(b.pixels / 1e6).toFixed(2)} MP` : "?"],
    ["width × height", dims(0), dims(1)], ["format", a.format || "?", b.format || "?"],
    ["taken (EXIF)", ok ? why.taken[0] || "not recorded" : "?", ok ? why.taken[1] || "not recorded" : "?"],
    ["modified", new Date(a.mtime * 1000).toLocaleString(), new Date(b.mtime * 1000).toLocaleString()]];
  const table = $("sbs-diff");
  rows.forEach((r, i) => {
    const tr = el("tr", {});
    r.forEach((c, j) => tr.append(el(i === 0 || j === 0 ? "th" : "td", {textContent: c,
      className: i > 0 && j > 0 && r[1] !== r[2] ? "differs" : ""})));
    if (i === 0) for (const th of tr.children) th.scope = "col"; else tr.firstChild.scope = "row";
    table.append(tr);
  });
  const box = $("sbs-why");
  box.textContent = "";
  if (!ok) { box.append(el("p", {className: "bad", textContent: why.error})); return; }
  box.append(el("h3", {textContent: `Why: ${why.level ? why.level : "no level"}`}), el("p", {textContent: why.why}));
  const checks = el("table", {className: "checks"}, el("caption", {textContent: "Each test, as vsearch duplicates --explain A B prints it"}));
  const headRow = el("tr", {});
  for (const h of ["test", "value", "needs", "result"]) headRow.append(el("th", {textContent: h, scope: "col"}));
  checks.append(headRow);
  for (const c of why.checks) {
    checks.append(el("tr", {className: c.result}, el("td", {textContent: c.test}), el("td", {textContent: c.value}),
                     el("td", {textContent: c.needs}), el("td", {textContent: c.result})));
  }
  box.append(checks);
}

function sbsKeys(e) {
  const step = 40;
  const keys = {"+": () => zoom(1.25), "=": () => zoom(1.25), "-": () => zoom(0.8), "0": fit, "1": fullSize,
                ArrowLeft: () => pan(step, 0), ArrowRight: () => pan(-step, 0), ArrowUp: () => pan(0, step),
                ArrowDown: () => pan(0, -step)};
  if (keys[e.key] && !e.target.matches("button, input, select")) { keys[e.key](); e.preventDefault(); }
}

function setUpSideBySide() {
  const panes = $("sbs-panes");
  panes.addEventListener("wheel", e => { e.preventDefault(); zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15); }, {passive: false});
  let drag = null;
  panes.addEventListener("pointerdown", e => { drag = [e.clientX, e.clientY]; panes.setPointerCapture(e.pointerId); });
  panes.addEventListener("pointermove", e => {
    if (!drag) return;
    pan(e.clientX - drag[0], e.clientY - drag[1]); drag = [e.clientX, e.clientY];
  });
  panes.addEventListener("pointerup", () => { drag = null; });
  $("sbs").addEventListener("keydown", sbsKeys);
  $("sbs-in").onclick = () => zoom(1.25); $("sbs-out").onclick = () => zoom(0.8);
  $("sbs-fit").onclick = fit; $("sbs-full").onclick = fullSize;
  $("sbs-close").onclick = () => $("sbs").close();
  $("sbs").addEventListener("close", () => { if (view.opener) view.opener.focus(); });
}

// --- wiring -------------------------------------------------------------------------------------

function setUp() {
  showThreshold();
  $("level").onchange = () => { thresholdSet = false; showThreshold(); find(); };
  $("keep").onchange = () => find();  // the rule picks every group's keeper: the groups are found with it
  let slide = null;
  $("threshold").oninput = () => {
    thresholdSet = true; showThreshold();
    clearTimeout(slide); slide = setTimeout(() => find(), 350);  // while sliding, one search at the end
  };
  $("find").onclick = () => find(true);
  $("opts").onsubmit = e => { e.preventDefault(); find(true); };
  $("select-page").onclick = () => { for (const g of search.groups) selected.add(g.number); showGroups(); };
  $("select-all").onclick = () => { allPages = true; showGroups(); };
  $("select-none").onclick = () => { allPages = false; selected = new Set(); showGroups(); };
  $("action").onchange = showSelection;
  $("apply").onclick = applyAll;
  $("undo").onclick = async () => {
    const [ok, data] = await post("/api/undo", {});
    say(ok ? data.message : data.error, ok ? "good" : "bad"); if (ok) await find();
  };
  setUpSideBySide();
  find();
}
setUp();
