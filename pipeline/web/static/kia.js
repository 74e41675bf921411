// kia serve: keys for the review pages (the terminal's keys), decisions posted at once.
// No build step, no libraries. Without this script every page still works with the mouse (forms).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function say(text, isError = false) {
  const line = $("#message");
  if (!line) return;
  line.textContent = text;
  line.className = isError ? "error" : "";
}

function prompt(text) {
  const line = $("#prompt");
  if (line) line.textContent = text || "";
}

function typing(event) {
  const target = event.target;
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function openDialog(id) {
  const dialog = document.getElementById(id);
  if (dialog && !dialog.open) dialog.showModal();
  return dialog;
}

// --- decisions: every form posts at once; the server answers where to go next ------------------
async function post(form) {
  // form.getAttribute: `form.action` would be the form's <input name="action">.
  const response = await fetch(form.getAttribute("action"), {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  let answer = {};
  try { answer = await response.json(); } catch (error) { answer = { error: `the server answered ${response.status}` }; }
  if (!response.ok && answer.changed) {
    // The proposal changed since this page was drawn (`kia propose` labelled the paper again): nothing
    // was saved; the page is drawn again with the new proposal, the reason shown on it.
    sessionStorage.setItem("kia-message", answer.error);
    location.reload();
    return false;
  }
  if (!response.ok) {
    say(answer.error || `the server answered ${response.status}`, true);
    // A note changed elsewhere: the typed text stays; the next save replaces the note now shown.
    const base = form.querySelector("input[name=base]");
    if (base && typeof answer.note === "string") base.value = answer.note;
    return false;
  }
  sessionStorage.removeItem("kia-quote");
  const next = new URL(answer.next, location.href);
  if (next.pathname + next.search === location.pathname + location.search) location.reload();
  else location.assign(next.href);
  return true;
}

function wireForms() {
  for (const form of $$("form.decide")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      post(form);
    });
  }
}

// --- the quote pane: a quote's page image (PDF) or its passage (other papers) ------------------
let quoteIndex = -1;

async function showQuote(link) {
  const links = $$("a.quote-link");
  quoteIndex = links.indexOf(link);
  for (const other of links) other.classList.toggle("selected", other === link);
  const pane = $("#pane");
  pane.innerHTML = "<p>loading…</p>";
  const url = new URL(link.href);
  url.searchParams.set("fragment", "1");
  const response = await fetch(url, { credentials: "same-origin" });
  const html = await response.text();
  if (!response.ok) {
    pane.textContent = html.replace(/<[^>]*>/g, " ").trim();
    return;
  }
  pane.innerHTML = html;
  sessionStorage.setItem("kia-quote", `${location.pathname}|${quoteIndex}`);
  const figure = $("figure.page", pane);
  if (figure && figure.dataset.top) {
    const image = $("img", figure);
    const scroll = () => { pane.scrollTop = figure.offsetTop + image.clientHeight * Number(figure.dataset.top) - pane.clientHeight / 3; };
    if (image.complete) scroll(); else image.addEventListener("load", scroll, { once: true });
  }
  const mark = $("#passage-mark", pane);
  if (mark) mark.scrollIntoView({ block: "center" });
}

function stepQuote(step) {
  const links = $$("a.quote-link");
  if (!links.length) { say("no quote located in this paper"); return; }
  const index = Math.min(Math.max(quoteIndex + step, 0), links.length - 1);
  links[index].scrollIntoView({ block: "nearest" });
  showQuote(links[index]);
}

// --- the paper page's keys ----------------------------------------------------------------------
const VERBS = { a: "accept", r: "reject", e: "edit", d: "definitions", t: "take" };
let pending = null; // {verb} waiting for an axis key, or {verb: "pick", axis} waiting for category keys

function axisByKey(key) {
  return $$("article.axis").find((axis) => axis.dataset.key === key || axis.dataset.axis.toLowerCase() === key.toLowerCase());
}

function axisChoices() {
  return $$("article.axis").map((axis) => `${axis.dataset.key} ${axis.dataset.axis}`).join("  ");
}

function cancel(text = "cancelled") {
  if (pending && pending.verb === "pick") pending.details.open = false;
  pending = null;
  prompt(text);
}

function submitAxis(verb, axis) {
  const form = $$("form.decide", axis).find((f) => $("input[name=action]", f).value === verb);
  if (!form) { say(`nothing to ${verb} on ${axis.dataset.axis}`, true); return; }
  post(form);
}

function startPick(axis) {
  const details = $("details.edit", axis);
  details.open = true;
  pending = { verb: "pick", axis, details, multi: axis.dataset.multi === "1" };
  axis.scrollIntoView({ block: "nearest" });
  prompt(`edit ${axis.dataset.axis}: ${pending.multi ? "keys toggle, Enter saves" : "its key saves"}; Esc cancels`);
}

function pickKey(key) {
  const { axis, multi, details } = pending;
  const form = $("form.edit-form", details);
  if (key === "Enter") {
    if (multi && !$$("input[name=category]:checked", form).length) { say("pick at least one category (Esc cancels)", true); return; }
    pending = null;
    post(form);
    return;
  }
  const label = $$("label.category", form).find((l) => l.dataset.categoryKey === key);
  if (!label) { say(`no category on key ${JSON.stringify(key)} in ${axis.dataset.axis}`, true); return; }
  const input = $("input", label);
  if (multi) {
    input.checked = !input.checked;
    prompt(`edit ${axis.dataset.axis}: ${$$("input[name=category]:checked", form).map((i) => i.value).join(", ") || "none"} (Enter saves)`);
  } else {
    input.checked = true;
    pending = null;
    post(form);
  }
}

function axisKey(key) {
  const verb = pending.verb;
  const axis = axisByKey(key);
  if (!axis) { say(`no axis on key ${JSON.stringify(key)}; the axes are ${axisChoices()}`, true); pending = null; prompt(""); return; }
  pending = null;
  prompt(`${VERBS[verb]} ${axis.dataset.axis}`);
  if (verb === "a") submitAxis("accept", axis);
  else if (verb === "r") submitAxis("reject", axis);
  else if (verb === "t") submitAxis("take", axis);
  else if (verb === "e") startPick(axis);
  else if (verb === "d") { const section = document.getElementById(`def-${axis.dataset.axis}`); if (section) section.scrollIntoView(); }
}

function go(url) { if (url) location.assign(url); else say("no paper that way in this queue"); }

function paperKeys(event) {
  const main = $("main.paper");
  const key = { ArrowRight: "s", ArrowLeft: "b" }[event.key] || event.key;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Escape") { if (pending) cancel(); return; }
  if (typing(event) || $("dialog[open]:not(#definitions)")) return;
  if (pending && pending.verb === "pick") { event.preventDefault(); pickKey(event.key); return; }
  if (pending) {
    event.preventDefault();
    if (pending.verb === "d" && !axisByKey(key)) { pending = null; $("#definitions").close(); } else axisKey(key);
    return;
  }
  if ($("#definitions").open) { if (key === "d") { $("#definitions").close(); event.preventDefault(); } return; }
  if (key in VERBS) {
    event.preventDefault();
    say("");
    pending = { verb: key };
    if (key === "d") openDialog("definitions");
    prompt(`${VERBS[key]}: which axis? ${axisChoices()}  (Esc cancels)`);
  } else if (key === "A") { event.preventDefault(); post($("form.accept-all")); }
  else if (key === "n") { event.preventDefault(); const note = $("#note"); note.focus(); note.select(); prompt("note: Enter saves, Esc cancels"); }
  else if (key === "s") go(main.dataset.next);
  else if (key === "b") go(main.dataset.back);
  else if (key === "q") location.assign(main.dataset.queue);
  else if (key === "j") stepQuote(1);
  else if (key === "k") stepQuote(-1);
  else if (key === "?") openDialog("help");
}

function wireNote() {
  const note = $("#note");
  if (!note) return;
  note.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { note.value = $("input[name=base]", note.form).value; note.blur(); prompt("note unchanged"); event.stopPropagation(); }
  });
}

// A tab brought back to the front reloads when another tab or the terminal changed this paper.
function watchState() {
  const main = $("main.paper");
  document.addEventListener("visibilitychange", async () => {
    if (document.visibilityState !== "visible") return;
    const response = await fetch(main.dataset.stateUrl, { credentials: "same-origin" });
    if (response.ok && (await response.json()).state !== main.dataset.state) location.reload();
  });
}

function setupPaper() {
  const kept = sessionStorage.getItem("kia-message");
  if (kept) { sessionStorage.removeItem("kia-message"); say(kept, true); }
  wireForms();
  wireNote();
  watchState();
  for (const link of $$("a.quote-link")) {
    link.addEventListener("click", (event) => { event.preventDefault(); showQuote(link); });
  }
  const [path, index] = (sessionStorage.getItem("kia-quote") || "|").split("|");
  const links = $$("a.quote-link");
  if (path === location.pathname && links[Number(index)]) showQuote(links[Number(index)]);
  else if (links.length) showQuote(links[0]);
  document.addEventListener("keydown", paperKeys);
}

// --- the queue's keys ---------------------------------------------------------------------------
function setupQueue() {
  const rows = $$("table.queue tbody tr");
  let selected = 0;
  const select = (index) => {
    if (!rows.length) return;
    selected = Math.min(Math.max(index, 0), rows.length - 1);
    rows.forEach((row, i) => row.classList.toggle("selected", i === selected));
    rows[selected].scrollIntoView({ block: "nearest" });
  };
  select(0);
  for (const [index, row] of rows.entries()) row.addEventListener("click", (event) => { if (event.target.tagName !== "A") { select(index); location.assign(row.dataset.href); } });
  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "j" || key === "ArrowDown") { event.preventDefault(); select(selected + 1); }
    else if (key === "k" || key === "ArrowUp") { event.preventDefault(); select(selected - 1); }
    else if ((key === "Enter" || key === "o") && rows.length) location.assign(rows[selected].dataset.href);
    else if (key === "r") { const resume = $("#resume"); if (resume) location.assign(resume.href); }
    else if (key === "ArrowRight") { const next = $("#next-page"); if (next) location.assign(next.href); }
    else if (key === "ArrowLeft") { const previous = $("#previous-page"); if (previous) location.assign(previous.href); }
    else if (key === "/") { event.preventDefault(); $("#find").focus(); }
    else if (key === "?") openDialog("help");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if ($("main.paper")) setupPaper();
  else if ($("table.queue")) setupQueue();
});
