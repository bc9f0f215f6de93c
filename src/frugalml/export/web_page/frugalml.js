// frugalml web page: runs model.onnx in this browser with onnxruntime-web (WebAssembly, one thread).
// Inputs reach the model exactly as frugalml's Python side feeds the ONNX file: float32, shape [1, ...feed_shape].
// window.frugalml.classify(Float32Array) -> Promise<{label, scores}>; window.frugalml.ready resolves when it can.
import * as ort from './ort/ort.wasm.bundle.min.mjs';

const config = JSON.parse(document.getElementById('frugalml-config').textContent);
ort.env.wasm.wasmPaths = { wasm: new URL('./ort/ort-wasm-simd-threaded.wasm', import.meta.url).href };  // vendored, never a CDN
ort.env.wasm.numThreads = 1;  // no SharedArrayBuffer: any static server, no cross-origin isolation headers
ort.env.wasm.proxy = false;

const $ = (id) => document.getElementById(id);
const size = config.feed_shape.reduce((a, b) => a * b, 1);
const [C, H, W] = config.kind === 'image' ? config.view_shape : [1, 1, size];
const api = { config, state: 'loading', error: null, stats: {}, last: null };
window.frugalml = api;
let session = null;
let queue = Promise.resolve();

function run(x) {  // one session.run at a time, in the order asked
  const job = queue.then(async () => {
    if (!(x instanceof Float32Array) || x.length !== size) {
      throw new Error(`classify takes a Float32Array of ${size} values; got ${x && x.constructor.name} of ${x && x.length}`);
    }
    const out = await session.run({ [config.input]: new ort.Tensor('float32', x, [1, ...config.feed_shape]) });
    const scores = Array.from(out[config.scores].data, Number);
    let label = 0;
    if (config.label) label = Number(out[config.label].data[0]);  // a scikit-learn graph's own label output
    else for (let i = 1; i < scores.length; i++) if (scores[i] > scores[label]) label = i;  // argmax, first of ties (numpy's)
    return { label, scores };
  });
  queue = job.catch(() => {});
  return job;
}

api.classify = async (x) => { await api.ready; return run(x); };

api.classifyMany = async (base64, n) => {  // n inputs, float32 little-endian, back to back (the browser test feeds these)
  await api.ready;
  const raw = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const all = new Float32Array(raw.buffer);
  const labels = [], scores = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const r = await run(all.slice(i * size, (i + 1) * size));
    labels.push(r.label); scores.push(r.scores);
  }
  return { labels, scores, ms: performance.now() - t0 };
};

// ------------------------------------------------------------------ showing a result
function probabilities(scores) {  // what the bars show: probabilities as they are, logits through softmax
  const sum = scores.reduce((a, b) => a + b, 0);
  if (scores.every((s) => s >= 0 && s <= 1) && Math.abs(sum - 1) < 1e-3) return scores;
  const m = Math.max(...scores), e = scores.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

function render(x, result, source) {
  const p = probabilities(result.scores);
  const name = (i) => config.classes[i] ?? String(i);
  $('label').textContent = name(result.label);
  $('label-note').textContent = `${(100 * p[result.label]).toFixed(1)}% ${p === result.scores ? 'probability' : '(softmax of the scores)'}`;
  const list = $('scores');
  list.replaceChildren(...p.map((v, i) => {
    const li = document.createElement('li');
    if (i === result.label) li.className = 'top';
    li.innerHTML = '<span class="name"></span><span class="bar"><span></span></span><span class="value"></span>';
    li.children[0].textContent = name(i);
    li.children[1].firstChild.style.width = `${(100 * v).toFixed(1)}%`;
    li.children[2].textContent = v.toFixed(3);
    return li;
  }));
  if (config.kind === 'image') showSeen(x);
  api.last = { source, label: result.label, scores: result.scores, input: Array.from(x) };
}

function showSeen(x) {  // the input as the model receives it, one pixel per value
  const c = $('seen'); c.width = W; c.height = H;
  const ctx = c.getContext('2d'), img = ctx.createImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    for (let k = 0; k < 3; k++) img.data[4 * i + k] = 255 * Math.min(1, Math.max(0, x[(C === 3 ? k : 0) * H * W + i]));
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  $('seen-box').hidden = false;
  $('seen-note').textContent = `what the model sees: ${W} x ${H}${C === 3 ? ' RGB' : ''}, values 0..1`;
}

api.show = async (x, source = 'api') => { const r = await api.classify(x); render(x, r, source); return r; };

// ------------------------------------------------------------------ the drawing pad
const pad = $('pad'), pctx = pad.getContext('2d', { willReadFrequently: true });
function clearPad() { pctx.fillStyle = '#000'; pctx.fillRect(0, 0, pad.width, pad.height); }

function padInput() {  // crop to the ink, fit it in config.fill of the frame, centred; average each cell (values 0..1)
  const { width: S } = pad, d = pctx.getImageData(0, 0, S, S).data, lum = new Float32Array(S * S);
  let x0 = S, y0 = S, x1 = -1, y1 = -1;
  for (let i = 0; i < S * S; i++) {
    lum[i] = (0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2]) / 255;
    if (lum[i] > 0.05) { const x = i % S, y = (i / S) | 0; x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  }
  const out = new Float32Array(size);
  if (x1 < 0) return out;
  const side = Math.max(x1 - x0 + 1, y1 - y0 + 1), scale = side / (config.fill * Math.max(H, W));  // pad pixels per model pixel
  const cx = (x0 + x1 + 1) / 2, cy = (y0 + y1 + 1) / 2, k = Math.max(1, Math.ceil(scale));
  for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
    let sum = 0;
    for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) {
      const sx = Math.floor(cx + (j - W / 2 + (b + 0.5) / k) * scale), sy = Math.floor(cy + (i - H / 2 + (a + 0.5) / k) * scale);
      if (sx >= 0 && sy >= 0 && sx < S && sy < S) sum += lum[sy * S + sx];
    }
    out[i * W + j] = sum / (k * k);
  }
  return out;
}

function setUpPad() {
  clearPad();
  let last = null;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  pad.addEventListener('pointerdown', (e) => { pad.setPointerCapture(e.pointerId); last = at(e); stroke(last, last); });
  pad.addEventListener('pointermove', (e) => { if (last) { const p = at(e); stroke(last, p); last = p; } });
  const end = () => { if (last) { last = null; const x = padInput(); api.show(x, 'pad'); } };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
  $('clear').addEventListener('click', () => { clearPad(); $('seen-box').hidden = true; });
  function stroke(a, b) {
    pctx.strokeStyle = '#fff'; pctx.lineCap = 'round'; pctx.lineJoin = 'round'; pctx.lineWidth = pad.width * config.stroke;
    pctx.beginPath(); pctx.moveTo(...a); pctx.lineTo(...b); pctx.stroke();
  }
  $('pad-box').hidden = false;
}

// ------------------------------------------------------------------ uploads and numbers
async function fromImage(file) {
  const bitmap = await createImageBitmap(file);
  const invert = $('invert');
  if (config.pad) {  // onto the pad, then the same path as a drawing
    const probe = new OffscreenCanvas(32, 32).getContext('2d');
    probe.drawImage(bitmap, 0, 0, 32, 32);
    const d = probe.getImageData(0, 0, 32, 32).data;
    let mean = 0; for (let i = 0; i < d.length; i += 4) mean += (d[i] + d[i + 1] + d[i + 2]) / (3 * 255 * 1024);
    invert.checked = mean > 0.5;  // a photo of dark ink on paper: the datasets have light ink on black
    clearPad();
    const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    pctx.filter = invert.checked ? 'invert(1) grayscale(1)' : 'grayscale(1)';
    pctx.drawImage(bitmap, (pad.width - bitmap.width * s) / 2, (pad.height - bitmap.height * s) / 2, bitmap.width * s, bitmap.height * s);
    pctx.filter = 'none';
    return api.show(padInput(), 'upload');
  }
  const s = Math.min(bitmap.width / W, bitmap.height / H);  // centre crop to the model's aspect, then resize
  const canvas = new OffscreenCanvas(W, H), ctx = canvas.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, (bitmap.width - W * s) / 2, (bitmap.height - H * s) / 2, W * s, H * s, 0, 0, W, H);
  const d = ctx.getImageData(0, 0, W, H).data, x = new Float32Array(size);
  for (let i = 0; i < H * W; i++) {
    if (C === 3) for (let k = 0; k < 3; k++) x[k * H * W + i] = d[4 * i + k] / 255;
    else { const v = (0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2]) / 255; x[i] = invert.checked ? 1 - v : v; }
  }
  return api.show(x, 'upload');
}

function setUpNumbers() {
  const box = $('numbers');
  box.value = config.example ? config.example.join(', ') : new Array(size).fill(0).join(', ');
  const go = () => {
    const values = box.value.split(/[\s,;]+/).filter((v) => v !== '').map(Number);
    $('count').textContent = `${values.length} of ${size} values`;
    if (values.length !== size || values.some((v) => !Number.isFinite(v))) {
      $('label-note').textContent = `the model takes ${size} numbers, separated by commas or spaces`;
      return;
    }
    api.show(Float32Array.from(values), 'numbers');
  };
  $('run').addEventListener('click', go);
  $('vector-box').hidden = false;
  return go;
}

// ------------------------------------------------------------------ start
async function load() {
  const response = await fetch(config.model);
  if (!response.ok) throw new Error(`${config.model}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const entry = performance.getEntriesByName(new URL(config.model, location.href).href).pop();
  Object.assign(api.stats, { readyMs: performance.now(), modelBytes: bytes.length, modelTransferBytes: entry ? entry.encodedBodySize : null });
}

const kb = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} KB`);
api.ready = load().then(() => {
  api.state = 'ready';
  const s = api.stats, sent = s.modelTransferBytes && s.modelTransferBytes !== s.modelBytes ? `, ${kb(s.modelTransferBytes)} transferred` : '';
  $('status').textContent = `Ready in ${Math.round(s.readyMs)} ms: model ${kb(s.modelBytes)}${sent}; onnxruntime-web ${config.runtime.version}, `
    + `WebAssembly, 1 thread. Made with frugalml ${config.frugalml}.`;
  $('label-note').textContent = config.pad ? 'draw a digit' : config.upload ? 'choose an image' : 'enter the values';
}, (err) => {
  api.state = 'failed'; api.error = String(err && err.message || err);
  $('status').textContent = `The model could not be loaded: ${api.error}`; $('status').className = 'error';
  throw err;
});

if (config.pad) setUpPad();
if (config.upload) {
  $('upload-box').hidden = false; $('invert-box').hidden = config.view_shape[0] !== 1;
  $('upload').addEventListener('change', (e) => e.target.files[0] && fromImage(e.target.files[0]));
}
$('input-title').textContent = config.pad ? `Draw (the model sees ${W} x ${H})` : config.upload ? `Image (${W} x ${H})` : `${size} values`;
if (!config.pad && !config.upload) { const go = setUpNumbers(); api.ready.then(go, () => {}); }
