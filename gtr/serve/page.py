"""The web page at / : one HTML file with its CSS and JS inline (no CDN; edge machines have no internet).

It reads /v1/model (class names, plans, limits) and runs one plan, or two side by side on the same
class, seed, temperature and number of images (e.g. gtr against mar-64), through POST /v1/generate with
`Accept: text/event-stream`: a progress bar follows the AR steps as the server samples, then each run
shows its images with a PNG download link each, its time, temperature, CFG and image count. Kept as a
Python string so it ships in the wheel with the code.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gtr serve</title>
<!-- One file, no external resources: edge machines have no internet. -->
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
  header { background: #23313f; color: #fff; padding: 10px 20px; }
  header h1 { font-size: 18px; margin: 0; display: inline; }
  header span { opacity: .75; margin-left: 12px; }
  header p { margin: 4px 0 0; font-size: 13px; opacity: .85; }
  main { display: flex; flex-wrap: wrap; gap: 20px; padding: 20px; align-items: flex-start; }
  form, .run { background: #fff; padding: 16px; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
  form { width: 300px; }
  label { display: block; margin-top: 10px; font-weight: 600; font-size: 13px; }
  input, select, button { font: inherit; width: 100%; box-sizing: border-box; margin-top: 4px; padding: 5px; }
  select[size] { height: 150px; }
  .row { display: flex; gap: 10px; } .row > div { flex: 1; }
  button { margin-top: 16px; background: #2a6fb0; color: #fff; border: 0; border-radius: 4px; padding: 8px; cursor: pointer; }
  button:disabled { background: #8aa; cursor: wait; }
  #results { display: flex; flex-direction: column; gap: 12px; }
  #runs { display: flex; flex-wrap: wrap; gap: 20px; }
  .run { width: 300px; } .run[hidden] { display: none; }
  .run h2 { font-size: 16px; margin: 0 0 8px; }
  progress { width: 100%; height: 10px; }
  .step { font-size: 13px; color: #555; min-height: 1.4em; }
  .images { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 6px; }
  figure { margin: 0; text-align: center; font-size: 12px; }
  figure img { width: 128px; height: 128px; image-rendering: pixelated; background: #ddd; display: block; }
  .took { margin-top: 8px; font-size: 13px; } .error { color: #b00020; }
  #summary { font-weight: 600; min-height: 1.4em; }
  small { color: #666; }
</style>
</head>
<body>
<header><h1>gtr serve</h1><span id="model">loading…</span>
  <p>MAR image generators with GtR sampling: fewer autoregressive steps for the same model. Run two plans
  on the same class and seed and compare the images and the time they took.</p></header>
<main>
  <form id="form" autocomplete="off">
    <label for="search">Class <small>(type to search)</small></label>
    <input id="search" type="search" placeholder="e.g. 3, seven, golden retriever">
    <select id="class" size="7"></select>
    <div class="row">
      <div><label for="plan">Plan</label><select id="plan"></select></div>
      <div><label for="plan-b">Compare with</label><select id="plan-b"></select></div>
    </div>
    <div class="row">
      <div><label for="seed">Seed</label><input id="seed" type="number" min="0" step="1" value="0"></div>
      <div><label for="num">Images</label><input id="num" type="number" min="1" step="1" value="1"></div>
    </div>
    <div class="row">
      <div><label for="temperature">Temperature</label><input id="temperature" type="number" min="0" max="10" step="0.05"></div>
      <div><label for="cfg">CFG</label><input id="cfg" type="number" min="1" max="100" step="0.1" placeholder="each plan's"></div>
    </div>
    <button id="go" type="submit">Generate</button>
  </form>
  <section id="results">
    <div id="status"><small>Pick a class and press the button.</small></div>
    <div id="runs">
      <section class="run" id="run-a" hidden><h2 id="title-a"></h2>
        <progress id="progress-a" value="0" max="1"></progress><div class="step" id="step-a"></div>
        <div class="images" id="images-a"></div><div class="took" id="took-a"></div></section>
      <section class="run" id="run-b" hidden><h2 id="title-b"></h2>
        <progress id="progress-b" value="0" max="1"></progress><div class="step" id="step-b"></div>
        <div class="images" id="images-b"></div><div class="took" id="took-b"></div></section>
    </div>
    <div id="summary"></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;

function fillClasses(filter) {
  const sel = $("class"), keep = sel.value, f = filter.trim().toLowerCase();
  sel.textContent = "";
  model.class_names.forEach((name, i) => {
    const label = `${i}: ${name}`;
    if (f && !label.toLowerCase().includes(f)) return;
    const opt = document.createElement("option");
    opt.value = String(i); opt.textContent = label;
    sel.appendChild(opt);
  });
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  else if (sel.options.length) sel.selectedIndex = 0;
}

const planOf = (name) => model.plans.find((p) => p.name === name);

function planChanged() {
  const p = planOf($("plan").value);
  if (p) $("temperature").value = p.temperature;
  $("go").textContent = $("plan-b").value ? "Compare" : "Generate";
}

async function init() {
  try {
    const r = await fetch("/v1/model");
    model = await r.json();
  } catch (e) {
    $("model").textContent = "cannot reach the server"; return;
  }
  $("model").textContent = `${model.model} · ${model.precision} · ${model.num_classes} classes · ${model.device}` +
    (model.random_weights ? " · RANDOM weights" : "");
  const none = document.createElement("option");
  none.value = ""; none.textContent = "nothing";
  $("plan-b").appendChild(none);
  for (const p of model.plans) {
    for (const sel of [$("plan"), $("plan-b")]) {
      const opt = document.createElement("option");
      opt.value = p.name; opt.textContent = p.name;
      sel.appendChild(opt);
    }
  }
  const other = model.plans.find((p) => p.name !== model.default_plan);  // e.g. mar-64 beside gtr
  $("plan-b").value = other ? other.name : "";
  $("num").max = model.limits.max_images;
  planChanged();
  fillClasses("");
  document.body.dataset.ready = "1";
}

function parseEvent(block) {  // one server-sent event: {event, data}; null for a comment (keep-alive)
  let event = "message"; const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

function resetRun(slot, plan) {
  const p = planOf(plan);
  $("run-" + slot).hidden = false;
  $("run-" + slot).dataset.events = "0";
  $("title-" + slot).textContent = `${plan} · ${p.steps} AR steps`;
  $("progress-" + slot).max = p.steps; $("progress-" + slot).value = 0;
  $("step-" + slot).textContent = "waiting…";
  $("images-" + slot).textContent = ""; $("took-" + slot).textContent = "";
}

// POST /v1/generate with Accept: text/event-stream: a step event per AR step, then the result (or an error).
async function runPlan(slot, body) {
  const r = await fetch("/v1/generate", { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "Accept": "text/event-stream" } });
  if (!r.ok) {
    let message = r.statusText;
    try { message = (await r.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the server closed the stream without an answer");
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const ev = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (!ev) continue;
      if (ev.event === "error") throw new Error(ev.data.error);
      if (ev.event === "result") return ev.data;
      if (ev.event === "step") {
        const run = $("run-" + slot);
        run.dataset.events = String(Number(run.dataset.events) + 1);
        $("progress-" + slot).max = ev.data.steps; $("progress-" + slot).value = ev.data.step;
        $("step-" + slot).textContent = `step ${ev.data.step} / ${ev.data.steps}`;
      }
    }
  }
}

function showResult(slot, data) {
  const box = $("images-" + slot);
  data.images.forEach((b64, i) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + b64; img.alt = `${data.plan.name} image ${i}`;
    const link = document.createElement("a");
    link.href = img.src; link.textContent = "PNG"; link.className = "download";
    link.download = `${model.model}-${data.plan.name}-class${data.class}-seed${data.seed}-${i}.png`;
    fig.append(img, link); box.appendChild(fig);
  });
  const t = data.timings, n = data.num_images;
  $("step-" + slot).textContent = "done";
  $("took-" + slot).textContent = `${t.sample_s.toFixed(2)} s sampling (${t.total_s.toFixed(2)} s in all) · ` +
    `temperature ${data.plan.temperature} · cfg ${data.plan.cfg} · ${n} image${n > 1 ? "s" : ""}`;
}

function showError(slot, err) {
  const span = document.createElement("span");
  span.className = "error"; span.id = "error-" + slot; span.textContent = err.message;
  $("step-" + slot).textContent = ""; $("step-" + slot).appendChild(span);
}

$("search").addEventListener("input", (e) => fillClasses(e.target.value));
$("plan").addEventListener("change", planChanged);
$("plan-b").addEventListener("change", planChanged);
$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = $("status");
  if (!$("class").value) { status.innerHTML = '<span class="error">no class matches the search</span>'; return; }
  const body = { class: Number($("class").value), seed: Number($("seed").value || 0),
                 num_images: Number($("num").value || 1) };
  if ($("temperature").value !== "") body.temperature = Number($("temperature").value);
  if ($("cfg").value !== "") body.cfg = Number($("cfg").value);
  const plans = [["a", $("plan").value], ["b", $("plan-b").value]].filter(([, p]) => p);
  $("run-b").hidden = true; $("summary").textContent = "";
  status.textContent = `${model.class_names[body.class]} (class ${body.class}), seed ${body.seed}`;
  for (const [slot, plan] of plans) resetRun(slot, plan);
  $("go").disabled = true;
  const done = {};
  try {
    for (const [slot, plan] of plans) {  // one after the other: the second's time is its own
      try {
        done[slot] = await runPlan(slot, { ...body, plan });
        showResult(slot, done[slot]);
      } catch (err) {
        showError(slot, err);
      }
    }
    if (done.a && done.b) {
      const [fast, slow] = [done.a, done.b].sort((x, y) => x.timings.sample_s - y.timings.sample_s);
      $("summary").textContent = `${fast.plan.name} sampled in ${(fast.timings.sample_s / slow.timings.sample_s * 100).toFixed(0)} % ` +
        `of ${slow.plan.name}'s time: ${(slow.timings.sample_s / fast.timings.sample_s).toFixed(1)}x faster`;
    }
  } finally {
    $("go").disabled = false;
  }
});
init();
</script>
</body>
</html>
"""
