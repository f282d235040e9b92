"""The web page at / : one HTML file with its CSS and JS inline (no CDN; edge machines have no internet).

It reads /v1/model (class names, plans) and posts to /v1/generate. Kept as a Python string so it ships in
the wheel with the code.
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
  main { display: flex; flex-wrap: wrap; gap: 24px; padding: 20px; }
  form { background: #fff; padding: 16px; border-radius: 6px; width: 340px; box-shadow: 0 1px 3px #0002; }
  label { display: block; margin-top: 10px; font-weight: 600; font-size: 13px; }
  input, select, button { font: inherit; width: 100%; box-sizing: border-box; margin-top: 4px; padding: 5px; }
  select[size] { height: 180px; }
  .row { display: flex; gap: 10px; } .row > div { flex: 1; }
  button { margin-top: 16px; background: #2a6fb0; color: #fff; border: 0; border-radius: 4px; padding: 8px; cursor: pointer; }
  button:disabled { background: #8aa; cursor: wait; }
  #result { background: #fff; padding: 16px; border-radius: 6px; width: 360px; box-shadow: 0 1px 3px #0002; }
  #image { width: 256px; height: 256px; image-rendering: pixelated; background: #ddd; display: block; }
  #status { margin-top: 10px; min-height: 1.4em; } .error { color: #b00020; }
  small { color: #666; }
</style>
</head>
<body>
<header><h1>gtr serve</h1><span id="model">loading…</span></header>
<main>
  <form id="form" autocomplete="off">
    <label for="search">Class <small>(type to search)</small></label>
    <input id="search" type="search" placeholder="e.g. 3, seven, golden retriever">
    <select id="class" size="8"></select>
    <label for="plan">Plan</label>
    <select id="plan"></select>
    <div class="row">
      <div><label for="seed">Seed</label><input id="seed" type="number" min="0" step="1" value="0"></div>
      <div><label for="cfg">CFG</label><input id="cfg" type="number" min="0" max="100" step="0.1"></div>
    </div>
    <button id="go" type="submit">Generate</button>
  </form>
  <section id="result">
    <img id="image" alt="generated image">
    <div id="status"><small>Pick a class and press Generate.</small></div>
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

function setPlanDefaults() {
  const p = model.plans.find((p) => p.name === $("plan").value);
  if (p) $("cfg").value = p.cfg;
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
  for (const p of model.plans) {
    const opt = document.createElement("option");
    opt.value = p.name; opt.textContent = `${p.name} (${p.steps} steps, cfg ${p.cfg})`;
    $("plan").appendChild(opt);
  }
  setPlanDefaults();
  fillClasses("");
  document.body.dataset.ready = "1";
}

$("search").addEventListener("input", (e) => fillClasses(e.target.value));
$("plan").addEventListener("change", setPlanDefaults);
$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = $("status");
  if (!$("class").value) { status.innerHTML = '<span class="error">no class matches the search</span>'; return; }
  const body = { class: Number($("class").value), seed: Number($("seed").value || 0), plan: $("plan").value };
  if ($("cfg").value !== "") body.cfg = Number($("cfg").value);
  $("go").disabled = true; status.textContent = "generating…";
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/generate", { method: "POST", headers: { "Content-Type": "application/json",
                          "Accept": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    const ms = performance.now() - t0;
    $("image").src = "data:image/png;base64," + data.images[0];
    const name = model.class_names[body.class];
    status.innerHTML = "";
    const line = document.createElement("div");
    line.id = "took";
    line.textContent = `${name} (class ${body.class}), seed ${body.seed}, plan ${data.plan.name}, cfg ${data.plan.cfg}: ` +
      `${(ms / 1000).toFixed(2)} s (sampling ${data.timings.sample_s.toFixed(2)} s, batch ${data.batch_sizes.join("+")})`;
    status.appendChild(line);
  } catch (err) {
    const span = document.createElement("span");
    span.className = "error"; span.id = "error"; span.textContent = err.message;
    status.textContent = ""; status.appendChild(span);
  } finally {
    $("go").disabled = false;
  }
});
init();
</script>
</body>
</html>
"""
