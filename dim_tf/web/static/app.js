// The page: loads site.json (written by `python -m dim_tf.web`), LiteRT.js (WebAssembly, XNNPACK on the CPU) and
// the bundle's .tflite files, then predicts what is drawn, pictures D(x) and the F_i(D(x)), and attacks it.
// Scores are computed as dim_tf.lite computes them: numerators / max(denominator, min_denominator) in float32
// (the DIM graphs keep the division out of the int8 model), the label is the graph's own `label` output.
// window.dimweb is the hook the browser tests drive (tests/test_web.py).

import {loadLiteRt, loadAndCompile, Tensor} from '@litertjs/core';
import {centerDigit, FIELD} from './preprocess.js';
import {squareAttack} from './attack.js';

const SITE_FORMAT = 'dim_tf.web-site';
const SITE_VERSION = 1;
const DIM_SCORES = 'numerators / max(denominator, min_denominator)';
const PIXELS = FIELD * FIELD;
const $ = (id) => document.getElementById(id);

const state = {
  site: null, entry: null, precision: 'quantized', input: new Uint8Array(PIXELS), source: 'blank',
  last: null, times: {}, compiled: {}, attack: null, stop: false, predictions: 0, busy: false,
};
const api = window.dimweb = {errors: [], log: [], state, loadTimes: {}};

// ------------------------------------------------------------------------------------------------ status, log

function setStatus(text, kind = 'info') {
  const el = $('status');
  el.textContent = text;
  el.className = kind;
}

function fail(message, error) {
  const detail = error ? `: ${error && error.message ? error.message : error}` : '';
  const text = message + detail;
  api.errors.push(text);
  setStatus(text, 'error');
  document.body.dataset.state = 'error';
  console.error(text);
  return text;
}

window.addEventListener('error', (e) => fail('Unexpected error in the page', e.error || e.message));
window.addEventListener('unhandledrejection', (e) => fail('Unexpected error in the page', e.reason));

function runtimeLog(text) {
  api.log.push(text);
  const pre = $('runtime-log');
  if (pre && api.log.length <= 500) pre.textContent += text + '\n';
  if (/^(ERROR|FATAL|F\d)/.test(text)) console.error(`LiteRT.js: ${text}`);
}

// LiteRT.js's WebAssembly module prints its INFO lines through Emscripten's printErr (console.error by
// default); they go to the page's log instead, and only its errors reach the console.
self.Module = {print: runtimeLog, printErr: runtimeLog};

// ------------------------------------------------------------------------------------------------ models

async function fetchBytes(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`cannot fetch ${url} (${e.message})`);
  }
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Compiled model for entry.files[which] ('quantized', 'float' or 'views'), loaded once, on first use.
function getModel(entry, which) {
  const key = `${entry.id}/${which}`;
  if (!state.compiled[key]) {
    state.compiled[key] = (async () => {
      const url = entry.dir + entry.files[which];
      const t0 = performance.now();
      let model;
      try {
        const bytes = await fetchBytes(url);
        model = await loadAndCompile(bytes, {accelerator: 'wasm'});
      } catch (e) {
        throw new Error(`could not load ${url} in LiteRT.js (${e && e.message ? e.message : e})`);
      }
      const inputs = model.getInputDetails();
      const outputs = model.getOutputDetails().map((d) => d.name);
      const shape = inputs.length === 1 ? Array.from(inputs[0].shape) : [];
      if (inputs.length !== 1 || shape.join() !== `1,${FIELD},${FIELD},1` ||
          !['uint8', 'float32'].includes(inputs[0].dtype)) {
        throw new Error(`${url}: expected one uint8/float32 input [1, 28, 28, 1], got ` +
                        JSON.stringify(inputs.map((d) => [d.name, d.dtype, Array.from(d.shape)])));
      }
      const expected = which === 'views' ? entry.views_outputs : entry.outputs.names;
      const missing = expected.filter((n) => !outputs.includes(n));
      if (missing.length) throw new Error(`${url} lacks the outputs ${missing.join(', ')} (has ${outputs.join(', ')})`);
      // one call on a black image: XNNPACK sets itself up on the first call (not a call worth timing), and a
      // model that cannot run fails here, with its name, rather than on the first drawing
      const warm = new Tensor(inputs[0].dtype === 'uint8' ? new Uint8Array(PIXELS) : new Float32Array(PIXELS),
                              [1, FIELD, FIELD, 1]);
      try {
        const res = await model.run({[inputs[0].name]: warm});
        for (const t of Object.values(res)) t.delete();
      } catch (e) {
        throw new Error(`${url} loaded but does not run in LiteRT.js (${e && e.message ? e.message : e})`);
      } finally {
        warm.delete();
      }
      api.loadTimes[key] = performance.now() - t0;
      return {model, input: inputs[0], url};
    })();
    state.compiled[key].catch(() => { delete state.compiled[key]; });
  }
  return state.compiled[key];
}

// One call of one model on a uint8 image: {out: {name: TypedArray}, ms}.
async function runModel(entry, which, u8) {
  const m = await getModel(entry, which);
  const data = m.input.dtype === 'uint8' ? u8 : Float32Array.from(u8, (v) => v / 255);
  const tensor = new Tensor(data, [1, FIELD, FIELD, 1]);
  let results = null;
  try {
    const t0 = performance.now();
    results = await m.model.run({[m.input.name]: tensor});
    const out = {};
    for (const [name, t] of Object.entries(results)) out[name] = t.toTypedArray().slice();
    return {out, ms: performance.now() - t0};
  } finally {
    tensor.delete();
    if (results) for (const t of Object.values(results)) t.delete();
  }
}

function scoresOf(entry, out) {
  const spec = entry.outputs;
  if (spec.scores === DIM_SCORES) {
    const den = Math.max(out.denominator[0], spec.min_denominator);
    return Array.from(out.numerators, (v) => Math.fround(v / den));
  }
  return Array.from(out.scores);
}

function precisionOf(entry) {
  return state.precision === 'float' && entry.files.float ? 'float' : 'quantized';
}

// Label and scores of a uint8 image on the selected model and file (what the attack queries).
async function classify(u8, which = precisionOf(state.entry)) {
  const entry = state.entry;
  const {out, ms} = await runModel(entry, which, u8);
  const scores = scoresOf(entry, out);
  if (!scores.every(Number.isFinite)) {
    throw new Error(`${entry.dir}${entry.files[which]} produced NaN or infinite scores (a broken model file)`);
  }
  return {label: out.label[0], scores, ms, which, file: entry.files[which]};
}

// ------------------------------------------------------------------------------------------------ drawing

function paintGray(canvas, values, {signed = false, scale = 1} = {}) {
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(FIELD, FIELD);
  for (let i = 0; i < PIXELS; i++) {
    const v = values[i];
    let r, g, b;
    if (signed) {  // perturbation: red = brighter, blue = darker, black = unchanged
      const a = Math.min(255, Math.round(Math.abs(v) * scale));
      [r, g, b] = v > 0 ? [a, a * 0.25, 0] : [0, a * 0.45, a];
    } else {
      r = g = b = Math.round(v * scale);
    }
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

const pad = $('pad');
const padCtx = pad.getContext('2d', {willReadFrequently: true});

function clearPad() {
  padCtx.fillStyle = '#000';
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

function paintPadFrom(u8) {
  const small = document.createElement('canvas');
  small.width = small.height = FIELD;
  paintGray(small, u8);
  padCtx.imageSmoothingEnabled = false;
  padCtx.drawImage(small, 0, 0, pad.width, pad.height);
}

function padPixels() {
  const data = padCtx.getImageData(0, 0, pad.width, pad.height).data;
  const gray = new Float64Array(pad.width * pad.height);
  for (let i = 0; i < gray.length; i++) gray[i] = data[4 * i] / 255;
  return centerDigit(gray, pad.width, pad.height);
}

let drawing = null;
pad.addEventListener('pointerdown', (e) => {
  e.preventDefault();
  try {
    pad.setPointerCapture(e.pointerId);  // keep the stroke when the finger or mouse leaves the canvas
  } catch (err) {
    // a synthetic event has no capturable pointer; drawing works without it
  }
  drawing = {x: e.offsetX * pad.width / pad.clientWidth, y: e.offsetY * pad.height / pad.clientHeight};
  padCtx.fillStyle = '#fff';
  padCtx.beginPath();
  padCtx.arc(drawing.x, drawing.y, 11, 0, 2 * Math.PI);
  padCtx.fill();
});
pad.addEventListener('pointermove', (e) => {
  if (!drawing) return;
  const x = e.offsetX * pad.width / pad.clientWidth, y = e.offsetY * pad.height / pad.clientHeight;
  padCtx.strokeStyle = '#fff';
  padCtx.lineWidth = 22;
  padCtx.lineCap = padCtx.lineJoin = 'round';
  padCtx.beginPath();
  padCtx.moveTo(drawing.x, drawing.y);
  padCtx.lineTo(x, y);
  padCtx.stroke();
  drawing = {x, y};
});
function endStroke() {
  if (!drawing) return;
  drawing = null;
  setInput(padPixels(), 'drawing');
}
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

$('clear').addEventListener('click', () => {
  clearPad();
  setInput(new Uint8Array(PIXELS), 'blank');
});

// ------------------------------------------------------------------------------------------------ answer

function renderBars(entry, scores, label) {
  const bars = $('bars');
  bars.replaceChildren();
  const max = Math.max(...scores), min = Math.min(...scores);
  const lo = entry.outputs.scores === DIM_SCORES ? 0 : min;  // DIM scores are ratios >= 0; logits may be < 0
  scores.forEach((s, i) => {
    const width = max > lo ? Math.max(0, (s - lo) / (max - lo)) * 100 : 0;
    const row = document.createElement('div');
    row.style.display = 'contents';
    row.className = i === label ? 'top' : '';
    row.innerHTML = `<span class="name">${entry.labels[i]}</span><span class="track"><span class="bar" ` +
      `style="display:block;width:${width.toFixed(1)}%"></span></span><span class="value">${s.toFixed(4)}</span>`;
    bars.appendChild(row);
  });
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
}

function renderTiming(result) {
  const times = state.times[`${state.entry.id}/${result.which}`] ||= [];
  times.push(result.ms);
  const kind = result.which === 'float' ? 'float32' : (state.entry.quantize === 'int8' ? 'int8' : state.entry.quantize);
  $('timing').textContent = `${result.file} (${kind}, LiteRT.js wasm/XNNPACK, 1 thread): ${result.ms.toFixed(2)} ms ` +
    `this call, median ${median(times.slice(-50)).toFixed(2)} ms of the last ${Math.min(50, times.length)}`;
}

async function renderViews(entry, u8) {
  const box = $('views');
  if (!entry.files.views) {
    box.replaceChildren();
    $('views-title').hidden = true;
    $('views-note').textContent = `${entry.name} is a classifier: it has no denoiser or internal models to picture.`;
    return null;
  }
  $('views-title').hidden = false;
  const {out, ms} = await runModel(entry, 'views', u8);
  const d = out.denoised, r = out.reconstructions;
  const figures = [['D(x)', d.subarray(0, PIXELS), false]];
  for (let i = 0; i < entry.labels.length; i++) {
    figures.push([`F${i}`, r.subarray(i * PIXELS, (i + 1) * PIXELS), i === state.last?.label]);
  }
  box.replaceChildren(...figures.map(([name, values, top]) => {
    const fig = document.createElement('figure');
    if (top) fig.className = 'top';
    const c = document.createElement('canvas');
    c.width = c.height = FIELD;
    c.className = 'px';
    paintGray(c, values, {scale: 255});
    const cap = document.createElement('figcaption');
    cap.textContent = name === 'D(x)' ? name : `F${name.slice(1)}: ${entry.labels[+name.slice(1)]}`;
    fig.append(c, cap);
    return fig;
  }));
  $('views-note').textContent = `${entry.files.views} (${entry.views_quantize}): ${ms.toFixed(2)} ms. ` +
    (entry.threshold !== null ? 'biDIM binarizes x and D(x) at 0.5; ' : '') +
    'each score is the ink of F_i(D(x)) over the ink of D(x).';
  return {denoised: Array.from(d), reconstructions: Array.from(r)};
}

function renderInput(u8, source) {
  paintGray($('input-view'), u8);
  const blank = u8.every((v) => v === 0);
  const notes = {digit: 'a test digit, fed as it is (28x28)', drawing: 'your drawing, centred and scaled',
                 adversarial: 'the adversarial image', blank: 'blank canvas', pixels: 'pixels set by script'};
  $('input-note').textContent = notes[source] || source;
  if (document.body.dataset.state === 'error') {
    // an error stays on screen
  } else if (blank) {
    setStatus('Blank canvas: the model reads a black image. D(x) has no ink, so the scores are the ' +
              'numerators over max(denominator, 1): finite, and meaningless until you draw.', 'warn');
  } else if (document.body.dataset.state === 'ready') {
    setStatus(`${state.entry.name} ready: draw a digit or load a test digit.`, 'ok');
  }
  return blank;
}

// Runs the selected model on the current input and updates every panel; returns what it showed.
async function predict() {
  const entry = state.entry, u8 = state.input;
  const blank = renderInput(u8, state.source);
  const result = await classify(u8);
  state.last = result;
  state.predictions += 1;
  $('pred-label').textContent = entry.labels[result.label];
  $('pred-text').textContent = `${entry.name}, ${result.file}` + (blank ? ' (blank input)' : '');
  renderBars(entry, result.scores, result.label);
  renderTiming(result);
  const views = await renderViews(entry, u8);
  return {...result, blank, views, input: Array.from(u8), source: state.source, model: entry.id};
}

async function setInput(u8, source) {
  state.input = u8;
  state.source = source;
  document.querySelectorAll('#digits button').forEach((b) => b.classList.toggle('active', false));
  try {
    return await predict();
  } catch (e) {
    fail('Prediction failed', e);
    throw e;
  }
}

// ------------------------------------------------------------------------------------------------ test digits

async function digitPixels(file) {
  const img = new Image();
  img.src = file;
  try {
    await img.decode();
  } catch (e) {
    throw new Error(`cannot read the test digit ${file}`);
  }
  const c = document.createElement('canvas');
  c.width = c.height = FIELD;
  const ctx = c.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(img, 0, 0, FIELD, FIELD);
  const data = ctx.getImageData(0, 0, FIELD, FIELD).data;
  return Uint8Array.from({length: PIXELS}, (_, i) => data[4 * i]);
}

async function loadDigit(i) {
  const digit = state.site.digits[i];
  if (!digit) throw new Error(`no test digit ${i}`);
  const u8 = await digitPixels(digit.file);
  clearPad();
  paintPadFrom(u8);
  const result = await setInput(u8, 'digit');
  document.querySelectorAll('#digits button')[i]?.classList.add('active');
  return {...result, truth: digit.label};
}

// ------------------------------------------------------------------------------------------------ attack

function epsPixels() {
  return Math.floor(parseFloat($('eps').value) * 255 + 1e-9);
}

function renderEps() {
  $('eps-out').textContent = `${parseFloat($('eps').value).toFixed(2)} (${epsPixels()}/255 per pixel)`;
}

async function attack({eps = null, queries = null, seed = null} = {}) {
  if (eps !== null) $('eps').value = eps;
  if (queries !== null) $('queries').value = queries;
  if (seed !== null) $('seed').value = seed;
  renderEps();
  const entry = state.entry;
  const x0 = state.input.slice();
  const which = precisionOf(entry);
  const clean = await classify(x0, which);
  const epsPx = epsPixels();
  const maxQueries = Math.max(1, parseInt($('queries').value, 10) || 1000);
  state.stop = false;
  $('attack').disabled = true;
  $('stop').disabled = false;
  $('inspect').disabled = true;
  $('attack-result').textContent = '';
  $('attack-result').className = '';
  $('attack-progress').textContent = `attacking ${entry.name} (${entry.files[which]}), label ${entry.labels[clean.label]}…`;
  try {
    const res = await squareAttack({
      x0, label: clean.label, epsPx, maxQueries, seed: parseInt($('seed').value, 10) || 0,
      query: (u8) => classify(u8, which),
      shouldStop: () => state.stop,
      onProgress: async ({queries: q, margin, label}) => {
        $('attack-progress').textContent = `${q} queries, margin ${margin.toFixed(4)}, label ${entry.labels[label]}`;
        await new Promise((r) => setTimeout(r, 0));
      },
    });
    const delta = Int16Array.from(res.x, (v, i) => v - x0[i]);
    const linf = delta.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    paintGray($('adv-view'), res.x);
    paintGray($('delta-view'), delta, {signed: true, scale: 255 / Math.max(1, epsPx)});
    const name = (l) => entry.labels[l];
    $('attack-result').textContent = res.success
      ? `${name(clean.label)} → ${name(res.label)} after ${res.queries} queries (${res.seconds.toFixed(1)} s); ` +
        `L-inf ${(linf / 255).toFixed(3)} (${linf}/255)`
      : `No adversarial within eps ${(epsPx / 255).toFixed(3)} after ${res.queries} queries ` +
        `(${res.seconds.toFixed(1)} s): the prediction stays ${name(clean.label)} (margin ${res.margin.toFixed(4)})`;
    $('attack-result').className = res.success ? 'ok' : '';
    $('attack-progress').textContent = `${entry.name}, ${entry.files[which]}, eps ${epsPx}/255, seed ` +
      `${$('seed').value}: ${res.queries} queries`;
    state.attack = {...res, x0, delta, clean, which, model: entry.id, epsPx, linf};
    $('inspect').disabled = false;
    return {success: res.success, label: res.label, scores: res.scores, queries: res.queries, seconds: res.seconds,
            clean_label: clean.label, clean_scores: clean.scores, x: Array.from(res.x), x0: Array.from(x0),
            linf, eps_px: epsPx, file: entry.files[which], model: entry.id};
  } catch (e) {
    fail('The attack failed', e);
    throw e;
  } finally {
    $('attack').disabled = false;
    $('stop').disabled = true;
  }
}

$('eps').addEventListener('input', renderEps);
$('attack').addEventListener('click', () => attack().catch(() => {}));
$('stop').addEventListener('click', () => { state.stop = true; });
$('inspect').addEventListener('click', () => {
  if (!state.attack) return;
  clearPad();
  paintPadFrom(state.attack.x);
  setInput(state.attack.x.slice(), 'adversarial').catch(() => {});
});

// ------------------------------------------------------------------------------------------------ switches

function adaptiveLine(entry) {
  $('adaptive').textContent = entry.adaptive ||
    `The adaptive suite (python -m dim_tf.eval --suite adaptive) has no result for ${entry.name} ` +
    `(${entry.source_model_dir || 'its model folder'}): this page cannot say how robust it is.`;
}

async function selectModel(id) {
  const entry = state.site.models.find((m) => m.id === id);
  if (!entry) throw new Error(`no model ${id} in this site`);
  state.entry = entry;
  document.querySelectorAll('#model-switch input').forEach((el) => { el.checked = el.value === id; });
  const floatRadio = document.querySelector('#precision-switch input[value=float]');
  floatRadio.disabled = !entry.files.float;
  if (!entry.files.float && state.precision === 'float') state.precision = 'quantized';
  document.querySelectorAll('#precision-switch input').forEach((el) => { el.checked = el.value === state.precision; });
  $('model-line').textContent = `${entry.name}: ${entry.summary}`;
  adaptiveLine(entry);
  try {
    await getModel(entry, precisionOf(entry));
    if (entry.files.views) await getModel(entry, 'views');
  } catch (e) {
    fail(`${entry.name}: the model did not load`, e);
    throw e;
  }
  return setInput(state.input, state.source);
}

async function selectPrecision(which) {
  state.precision = which;
  document.querySelectorAll('#precision-switch input').forEach((el) => { el.checked = el.value === which; });
  try {
    await getModel(state.entry, precisionOf(state.entry));
  } catch (e) {
    fail(`${state.entry.name}: the model did not load`, e);
    throw e;
  }
  return setInput(state.input, state.source);
}

async function benchmark(n = 200, which = null) {
  const entry = state.entry;
  const files = which ? [which] : ['quantized', ...(entry.files.float ? ['float'] : [])];
  const out = {};
  for (const w of files) {
    await getModel(entry, w);
    for (let i = 0; i < 5; i++) await runModel(entry, w, state.input);  // warm-up
    // performance.now() is coarsened to 0.1 ms in a page without cross-origin isolation: the median of the
    // per-call times is that coarse, the mean (one clock pair around all n calls) is not
    const times = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) times.push((await runModel(entry, w, state.input)).ms);
    const mean = (performance.now() - t0) / n;
    out[w] = {file: entry.files[w], calls: n, median_ms: median(times), mean_ms: mean, min_ms: Math.min(...times)};
  }
  $('bench-out').textContent = Object.values(out).map((r) =>
    `${r.file}: median ${r.median_ms.toFixed(2)} ms, mean ${r.mean_ms.toFixed(3)} ms`).join('; ');
  return out;
}

$('bench').addEventListener('click', () => benchmark().catch((e) => fail('Timing failed', e)));

// ------------------------------------------------------------------------------------------------ start

function checkSite(site) {
  if (!site || site.format !== SITE_FORMAT) throw new Error('site.json is not a dim_tf web site description');
  if (site.format_version !== SITE_VERSION) {
    throw new Error(`site.json has format_version ${site.format_version}, this page reads ${SITE_VERSION}: rebuild ` +
                    'the site with python -m dim_tf.web');
  }
  if (!Array.isArray(site.models) || !site.models.length) throw new Error('site.json lists no models');
}

function buildControls(site) {
  const sw = $('model-switch');
  site.models.forEach((m, i) => {
    const label = document.createElement('label');
    label.innerHTML = `<input type="radio" name="model" value="${m.id}" ${i === 0 ? 'checked' : ''}> ${m.name}`;
    label.querySelector('input').addEventListener('change', () => selectModel(m.id).catch(() => {}));
    sw.appendChild(label);
  });
  sw.hidden = site.models.length < 2;
  document.querySelectorAll('#precision-switch input').forEach((el) => {
    el.addEventListener('change', () => selectPrecision(el.value).catch(() => {}));
  });
  const box = $('digits');
  site.digits.forEach((d, i) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.title = `MNIST test image ${d.index} (label ${d.label})`;
    b.innerHTML = `<img src="${d.file}" alt="test digit ${d.label}">`;
    b.addEventListener('click', () => loadDigit(i).catch((e) => fail('Loading the test digit failed', e)));
    box.appendChild(b);
  });
  $('site-info').innerHTML = `Built ${site.built} by python -m dim_tf.web from ${site.models.map((m) =>
    `<code>${m.bundle}</code>`).join(', ')}; LiteRT.js ${site.runtime.version} (${site.runtime.package}); ` +
    `${(site.bytes / 1e6).toFixed(1)} MB in ${site.files} files.`;
}

async function start() {
  const t0 = performance.now();
  if (location.protocol === 'file:') {
    throw new Error('this page must be served over HTTP (WebAssembly and fetch do not work from file://): run ' +
                    '`python -m http.server -d SITE` and open http://localhost:8000/');
  }
  let site;
  try {
    const response = await fetch('site.json', {cache: 'no-cache'});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    site = await response.json();
  } catch (e) {
    throw new Error(`site.json could not be read (${e.message}): this folder is not a site written by ` +
                    'python -m dim_tf.web');
  }
  checkSite(site);
  state.site = site;
  buildControls(site);
  renderEps();
  clearPad();
  try {
    await loadLiteRt(site.runtime.wasm_dir);
  } catch (e) {
    throw new Error(`the LiteRT.js runtime did not load from ${site.runtime.wasm_dir} (${e && e.message ? e.message : e})`);
  }
  api.loadTimes.runtime = performance.now() - t0;
  state.entry = site.models[0];
  document.body.dataset.state = 'loading-model';
  setStatus(`Loading ${state.entry.name}…`);
  await selectModel(state.entry.id);
  if (site.digits.length) await loadDigit(0);
  api.loadTimes.ready = performance.now() - t0;
  api.loadTimes.since_navigation = performance.now();
  document.body.dataset.state = 'ready';
  setStatus(`${state.entry.name} ready in ${(api.loadTimes.ready / 1000).toFixed(2)} s: draw a digit or load a test digit.`,
            'ok');
}

Object.assign(api, {
  loadDigit, attack, benchmark, selectModel, selectPrecision, classify,
  setPixels: (pixels, source = 'pixels') => setInput(Uint8Array.from(pixels), source),
  padPixels: () => Array.from(padPixels()),
  padGray: () => {
    const data = padCtx.getImageData(0, 0, pad.width, pad.height).data;
    return Array.from({length: pad.width * pad.height}, (_, i) => data[4 * i]);
  },
  current: () => ({model: state.entry?.id, precision: precisionOf(state.entry), source: state.source,
                   input: Array.from(state.input), label: state.last?.label, scores: state.last?.scores,
                   predictions: state.predictions, status: $('status').textContent,
                   status_kind: $('status').className}),
});
api.ready = start().catch((e) => {
  fail('The page could not start', e);
  throw e;
});
api.ready.catch(() => {});
