// matdiff's local page: talks to the server's JSON API (docs/web.md); no other network use.
"use strict";

const $ = (id) => document.getElementById(id);
const KINDS = ["scalar", "positive scalar", "vector", "matrix", "symmetric matrix", "spd matrix", "function",
               "scalar_function"];
const state = {
  expression: "", dialect: "matrixcalculus", wrt: [], order: 1, layout: "numerator", vec: "column",
  format: "text",                                      // the notation of each result's text line
  index: false, steps: true, check: true, checks: true,  // checks: the code's runtime checks
  decls: {},                                           // the user's own declarations
  facts: [],                                           // equations the derivative may use
};
let inferred = {};        // name -> declaration the server inferred
let code = {};            // backend -> {source} | {error}
let backend = "numpy";
let inspectTimer = null;
let inspectSeq = 0;
let deriveSeq = 0;
let pristine = false;     // the input holds an example no one has edited: a click selects it
let wrtChosen = false;    // the user (a box, a shared link, an example) chose wrt; else the default follows the input

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data;
  try { data = await response.json(); } catch (e) { data = {error: `the server answered ${response.status}`}; }
  return {ok: response.ok, status: response.status, data};
}

function tex(el, latex, display = true) {
  try {
    katex.render(latex, el, {displayMode: display, throwOnError: false, output: "htmlAndMathml"});
  } catch (e) {
    el.textContent = latex;
  }
}

// --------------------------------------------------------------------------- declarations

function splitDecl(decl) {
  const m = /^\s*(\w+)\s*(?:\(([^)]*)\))?\s*(symmetric|spd|positive)?\s*$/.exec(decl || "");
  if (!m) return {kind: "matrix", dims: ""};
  const kind = m[3] ? `${m[3]} ${m[1]}` : m[1];
  return {kind, dims: (m[2] || "").trim()};
}

function joinDecl(kind, dims) {
  dims = dims.trim();
  if (kind === "scalar" || kind === "function" || kind === "scalar_function") return kind;
  if (kind === "positive scalar") return "scalar positive";
  if (kind === "symmetric matrix") return `matrix(${dims || "n, n"}) symmetric`;
  if (kind === "spd matrix") return `matrix(${dims || "n, n"}) spd`;  // symmetric positive definite
  return dims ? `${kind}(${dims})` : kind;
}

function isFunction(decl) { return decl === "function" || decl === "scalar_function"; }

function renderDeclarations() {
  const body = $("declarations").querySelector("tbody");
  body.textContent = "";
  const names = Object.keys(inferred);
  for (const name of names) {
    const decl = state.decls[name] || inferred[name];
    const {kind, dims} = splitDecl(decl);
    const row = document.createElement("tr");
    row.dataset.name = name;
    const pick = document.createElement("td");
    if (!isFunction(decl)) {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.className = "wrt";
      box.checked = state.wrt.includes(name);
      box.setAttribute("aria-label", `differentiate by ${name}`);
      box.addEventListener("change", () => {
        state.wrt = box.checked ? [...new Set([...state.wrt, name])] : state.wrt.filter((w) => w !== name);
        wrtChosen = true;
      });
      pick.appendChild(box);
    }
    const label = document.createElement("td");
    label.textContent = name;
    const kindCell = document.createElement("td");
    const select = document.createElement("select");
    select.className = "kind";
    select.setAttribute("aria-label", `kind of ${name}`);
    for (const k of KINDS) {
      const option = document.createElement("option");
      option.value = k;
      option.textContent = k.replace("_", " ");
      option.selected = k === kind;
      select.appendChild(option);
    }
    const dimsCell = document.createElement("td");
    const input = document.createElement("input");
    input.type = "text";
    input.className = "dims";
    input.value = dims;
    input.setAttribute("aria-label", `dims of ${name}`);
    const changed = () => {
      state.decls[name] = joinDecl(select.value, input.value);
      scheduleInspect(0);
    };
    select.addEventListener("change", changed);
    input.addEventListener("change", changed);
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") { changed(); derive(); } });
    kindCell.appendChild(select);
    dimsCell.appendChild(input);
    row.append(pick, label, kindCell, dimsCell);
    body.appendChild(row);
  }
}

// --------------------------------------------------------------------------- parsing as one types

function showError(error, column, fact) {
  if (fact === undefined || fact === null) { showParseError(error, column); return; }
  const status = $("facts-status");
  const text = state.facts[fact] || "";
  status.textContent = column === undefined || column === null
    ? error : `${text}\n${" ".repeat(column)}^\n${error}`;
}

function showParseError(error, column) {
  const status = $("parse-status");
  status.classList.remove("ok");
  status.textContent = "";
  if (column !== undefined && column !== null) {  // the input and a caret: one line, scrolls
    const where = document.createElement("span");
    where.className = "caret";
    where.textContent = `${state.expression}\n${" ".repeat(column)}^\n`;
    status.appendChild(where);
  }
  const message = document.createElement("span");
  message.className = "message";  // the message wraps
  message.textContent = error;
  status.appendChild(message);
}

function clearResults() {  // results that no longer match the input are not shown
  $("results").textContent = "";
  $("results").classList.remove("stale");
  $("code-section").hidden = true;
  $("echo").textContent = "";
}

function markStale() {
  if ($("results").childElementCount) $("results").classList.add("stale");
}

function scheduleInspect(delay = 200) {
  clearTimeout(inspectTimer);
  inspectTimer = setTimeout(inspect, delay);
}

async function inspect() {
  readControls();
  const seq = ++inspectSeq;
  if (!state.expression.trim()) {
    $("parse-status").textContent = "";
    $("echo").textContent = "";
    return false;
  }
  const {ok, data} = await api("/api/inspect", request());
  if (seq !== inspectSeq) return ok;  // a newer inspection renders; this one only answers
  if (!ok) {
    clearResults();
    showError(data.error, data.column, data.fact);
    return false;
  }
  $("parse-status").textContent = (data.notes || []).map((n) => `note: ${n}`).join("\n");
  $("facts-status").textContent = "";
  $("parse-status").classList.add("ok");
  tex($("echo"), `f = ${data.expression.latex}`);
  inferred = data.declarations;
  for (const name of Object.keys(state.decls)) if (!(name in inferred)) delete state.decls[name];
  state.wrt = state.wrt.filter((w) => w in inferred && !isFunction(inferred[w]));
  if (!state.wrt.length) wrtChosen = false;
  if (!wrtChosen) {  // by default the usual parameter names: w, W1, x, θ; else the first
    // picked afresh from each inspection, so that a pick made while typing ("a'*e" → a) does not stick
    const names = Object.keys(inferred).filter((n) => !isFunction(inferred[n]));
    const usual = [/^[wW]\d*$/, /^(theta|θ|beta|β)$/, /^x$/];
    const pick = usual.map((re) => names.find((n) => re.test(n))).find(Boolean) || names[0];
    state.wrt = pick ? [pick] : [];
  }
  renderDeclarations();
  return true;
}

// --------------------------------------------------------------------------- deriving

function readControls() {
  state.expression = $("expression").value;
  state.dialect = $("dialect").value;
  state.order = Number($("order").value);
  state.layout = $("layout").value;
  state.vec = $("vec").value;
  state.format = $("format").value;
  state.index = $("index").checked;
  state.steps = $("steps").checked;
  state.check = $("check").checked;
  state.checks = $("checks").checked;
  state.facts = $("facts").value.split("\n").filter((line) => line.trim());
}

function writeControls() {
  $("expression").value = state.expression;
  $("dialect").value = state.dialect;
  $("order").value = String(state.order);
  $("layout").value = state.layout;
  $("vec").value = state.vec;
  $("format").value = state.format;
  $("index").checked = state.index;
  $("steps").checked = state.steps;
  $("check").checked = state.check;
  $("checks").checked = state.checks;
  $("facts").value = state.facts.join("\n");
}

function request() {
  const body = {expression: state.expression, dialect: state.dialect, declarations: state.decls,
                facts: state.facts};
  return body;
}

async function derive() {
  clearTimeout(inspectTimer);
  readControls();
  const seq = ++deriveSeq;
  if (!(await inspect())) return;
  const body = {...request(), wrt: state.wrt, order: state.order, layout: state.layout, vec: state.vec,
                format: state.format, index: state.index, steps: state.steps, check: state.check, code: true,
                checks: state.checks};
  $("error").textContent = "";
  $("results").setAttribute("aria-busy", "true");
  const {ok, data} = await api("/api/derive", body);
  if (seq !== deriveSeq) return;
  $("results").removeAttribute("aria-busy");
  if (!ok) {
    $("results").textContent = "";
    $("code-section").hidden = true;
    if (data.column !== undefined || data.fact !== undefined) showError(data.error, data.column, data.fact);
    $("error").textContent = data.error;
    return;
  }
  saveHash();
  renderResults(data.results);
  code = data.code || {};
  renderCode();
  document.body.dataset.derived = String(seq);
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

async function copy(text, b) {
  try {
    await navigator.clipboard.writeText(text);
    const was = b.textContent;
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = was; }, 1200);
  } catch (e) {
    $("error").textContent = `could not copy: ${e}`;
  }
}

function fitFormula(el) {  // a formula wider than its box scrolls, with a visible cue
  el.classList.toggle("overflows", el.scrollWidth > el.clientWidth + 1);
}

function renderResults(results) {
  const host = $("results");
  host.textContent = "";
  host.classList.remove("stale");
  for (const r of results) {
    const card = document.createElement("div");
    card.className = "result";
    card.dataset.wrt = r.wrt;
    const formula = document.createElement("div");
    formula.className = "formula";
    tex(formula, `${r.label_latex} = ${r.latex}`);
    formula.title = "scroll sideways to see the whole formula";
    const actions = document.createElement("div");
    actions.className = "row";
    const copyLatex = button("Copy LaTeX", () => copy(r.latex, copyLatex));
    copyLatex.className = "copy-latex";
    // in the chosen notation; where that dialect cannot write it, the text and the reason
    const written = r.output === undefined || r.output === null ? r.text : r.output;
    const plain = document.createElement("div");
    plain.className = "plain";
    const line = document.createElement("code");
    line.className = "output";
    line.textContent = written;
    const shape = document.createElement("span");
    shape.className = "shape";
    shape.textContent = r.shape.length ? `shape ${r.shape.join(" × ")}` : "a scalar";
    plain.append(line, shape);
    if (r.output_error) {
      const why = document.createElement("span");
      why.className = "output-error";
      why.textContent = r.output_error;
      plain.appendChild(why);
    }
    const copyText = button("Copy text", () => copy(written, copyText));
    copyText.className = "copy-text";
    actions.append(copyLatex, copyText);
    card.append(formula, plain, actions);
    if (r.check) {
      const v = document.createElement("div");
      v.className = "verdict";
      if (r.check.ok === true) {
        v.classList.add("good");
        v.textContent = `✓ checked: relative error ${r.check.error.toExponential(1)} against finite differences`;
      } else if (r.check.ok === false) {
        v.classList.add("bad");
        v.textContent = `✗ the numeric check failed: ${r.check.reason}`;
      } else {
        v.textContent = `not checked: ${r.check.reason}`;
      }
      card.appendChild(v);
    }
    if (r.index) {
      const ix = document.createElement("div");
      ix.className = "index";
      ix.textContent = r.index.text;
      card.appendChild(ix);
    }
    if (r.steps) {
      const d = document.createElement("details");
      const s = document.createElement("summary");
      s.textContent = "Steps";
      const body = document.createElement("div");
      body.className = "steps";
      if (r.steps.latex) tex(body, r.steps.latex); else body.textContent = r.steps.reason;
      d.append(s, body);
      card.appendChild(d);
    }
    host.appendChild(card);
    fitFormula(formula);
  }
}

function renderCode() {
  const section = $("code-section");
  section.hidden = !Object.keys(code).length;
  for (const tab of section.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.backend === backend));
  }
  const c = code[backend] || {};
  $("code").textContent = c.source || `# ${c.error || ""}`;
}

// --------------------------------------------------------------------------- sharing

function saveHash() {
  const p = new URLSearchParams();
  p.set("e", state.expression);
  if (state.dialect !== "matrixcalculus") p.set("d", state.dialect);
  p.set("w", state.wrt.join(","));
  p.set("o", String(state.order));
  if (state.layout !== "numerator") p.set("l", state.layout);
  if (state.vec !== "column") p.set("r", state.vec);
  if (state.format !== "text") p.set("n", state.format);
  if (state.index) p.set("i", "1");
  if (!state.steps) p.set("s", "0");
  if (!state.check) p.set("c", "0");
  if (!state.checks) p.set("k", "0");
  if (Object.keys(state.decls).length) p.set("v", JSON.stringify(state.decls));
  if (state.facts.length) p.set("f", JSON.stringify(state.facts));
  history.replaceState(null, "", "#" + p.toString());
}

function loadHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.has("e")) return false;
  state.expression = p.get("e");
  state.dialect = p.get("d") || "matrixcalculus";
  state.wrt = (p.get("w") || "").split(",").filter(Boolean);
  wrtChosen = state.wrt.length > 0;
  state.order = Number(p.get("o") || 1);
  state.layout = p.get("l") || "numerator";
  state.vec = p.get("r") === "row" ? "row" : "column";
  state.format = ["latex", "mc", "numpy"].includes(p.get("n")) ? p.get("n") : "text";
  state.index = p.get("i") === "1";
  state.steps = p.get("s") !== "0";
  state.check = p.get("c") !== "0";
  state.checks = p.get("k") !== "0";
  try { state.decls = JSON.parse(p.get("v") || "{}"); } catch (e) { state.decls = {}; }
  try { state.facts = JSON.parse(p.get("f") || "[]"); } catch (e) { state.facts = []; }
  if (!Array.isArray(state.facts)) state.facts = [];
  return true;
}

function loadExample(example) {
  Object.assign(state, {
    expression: example.expression, dialect: example.dialect || "matrixcalculus",
    wrt: example.wrt || [], order: example.order || 1, layout: example.layout || "numerator",
    vec: example.vec || "column",
    decls: {...(example.declarations || {})}, facts: [...(example.facts || [])],
  });
  wrtChosen = state.wrt.length > 0;
  writeControls();
  pristine = true;
  derive();
}

// --------------------------------------------------------------------------- wiring

async function main() {
  const {data} = await api("/api/examples");
  const examples = (data && data.examples) || [];
  const menu = $("examples");
  examples.forEach((ex, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = ex.name;
    menu.appendChild(option);
  });
  menu.addEventListener("change", () => {
    if (menu.value !== "") loadExample(examples[Number(menu.value)]);
  });
  $("expression").addEventListener("input", () => { pristine = false; markStale(); scheduleInspect(); });
  for (const event of ["focus", "click"]) {  // typing replaces an example, never appends to it
    $("expression").addEventListener(event, () => { if (pristine) { $("expression").select(); pristine = false; } });
  }
  window.addEventListener("resize", () => document.querySelectorAll(".formula").forEach(fitFormula));
  $("expression").addEventListener("keydown", (e) => { if (e.key === "Enter") derive(); });
  $("dialect").addEventListener("change", () => scheduleInspect(0));
  $("facts").addEventListener("input", () => { markStale(); scheduleInspect(); });
  $("derive").addEventListener("click", derive);
  for (const id of ["order", "layout", "vec", "format", "index", "steps", "check", "checks"]) $(id).addEventListener("change", derive);
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => { backend = tab.dataset.backend; renderCode(); });
  }
  $("copy-code").addEventListener("click", () => copy($("code").textContent, $("copy-code")));
  $("download-code").addEventListener("click", () => {
    const blob = new Blob([$("code").textContent], {type: "text/x-python"});
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `matdiff_${backend}.py`;
    a.click();
    URL.revokeObjectURL(a.href);
  });
  window.addEventListener("hashchange", () => { if (loadHash()) { writeControls(); derive(); } });
  if (!loadHash() && examples.length) {
    loadExample(examples[0]);
  } else {
    writeControls();
    derive();
  }
  $("expression").focus();
}

document.addEventListener("DOMContentLoaded", main);
