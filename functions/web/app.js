// Myeloscope page: send an image to the API, show the model's calls, counts and per-cell saliency.
// Plain browser JavaScript (no build step). Settings: config.js (window.MYELOSCOPE_CONFIG) or ?api=<url>.

/** Lambda takes 6 MB and the body arrives base64-encoded (4/3 larger): bigger images use POST /uploads. */
const DIRECT_LIMIT = 4_500_000;

const config = window.MYELOSCOPE_CONFIG ?? {};
const apiBase = (new URLSearchParams(location.search).get('api') ?? config.apiBase ?? '').replace(/\/$/, '');
const $ = (id) => document.getElementById(id);

let result = null;
let selected = null;

function apiHeaders(extra = {}) {
  return config.apiKey ? { ...extra, 'x-api-key': config.apiKey } : extra;
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

async function readJson(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: `http-${res.status}`, message: text.slice(0, 200) || res.statusText } };
  }
}

function contentTypeOf(file) {
  if (file.type) return file.type;
  const ext = file.name.split('.').pop()?.toLowerCase();
  return { tif: 'image/tiff', tiff: 'image/tiff', bmp: 'image/bmp', jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png' }[ext] ?? 'application/octet-stream';
}

async function analyse(file) {
  result = null;
  selected = null;
  $('results').hidden = true;
  const type = contentTypeOf(file);
  try {
    let res;
    if (file.size > DIRECT_LIMIT) {
      setStatus(`Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`);
      const ticketRes = await fetch(`${apiBase}/uploads`, { method: 'POST', headers: apiHeaders({ 'content-type': 'application/json' }), body: JSON.stringify({ contentType: type }) });
      const ticket = await readJson(ticketRes);
      if (!ticketRes.ok) throw new Error(ticket.error?.message ?? `upload refused (${ticketRes.status})`);
      const put = await fetch(ticket.uploadUrl, { method: 'PUT', headers: ticket.headers, body: file });
      // Read to the end: an unread body is cancelled, which the browser logs as a failed request.
      await put.arrayBuffer();
      if (!put.ok) throw new Error(`the upload to storage failed (${put.status})`);
      setStatus(`Analysing ${file.name}…`);
      res = await fetch(`${apiBase}/predict?explain=all`, { method: 'POST', headers: apiHeaders({ 'content-type': 'application/json' }), body: JSON.stringify({ key: ticket.key }) });
    } else {
      setStatus(`Analysing ${file.name}…`);
      res = await fetch(`${apiBase}/predict?explain=all`, { method: 'POST', headers: apiHeaders({ 'content-type': type }), body: file });
    }
    const body = await readJson(res);
    if (!res.ok) throw new Error(body.error?.message ?? body.message ?? `the API answered ${res.status}`);
    result = body;
    render(file.name);
  } catch (err) {
    setStatus(`Could not analyse ${file.name}: ${err instanceof Error ? err.message : String(err)}`, true);
  }
}

function pct(v) {
  return `${(v * 100).toFixed(1)} %`;
}

function render(name) {
  const r = result;
  $('overlay').src = `data:image/png;base64,${r.overlayPng}`;
  $('count-nucleated').textContent = String(r.nucleatedCellCount);
  $('count-plasma').textContent = String(r.plasmaCellCount);
  $('fraction').textContent = pct(r.plasmaCellFraction);
  const high = r.call.label === 'plasma-cell-fraction-high';
  $('call').textContent = `${high ? 'high' : 'low'} (threshold ${pct(r.call.threshold)})`;
  $('call').className = `value ${high ? 'call-high' : 'call-low'}`;
  $('model').textContent = `model run ${r.runId}; a cell is called plasma at P ≥ ${r.call.cellProbabilityThreshold}. ${r.call.note}.`;

  const tbody = $('cells').querySelector('tbody');
  tbody.replaceChildren();
  const spots = $('hotspots');
  spots.replaceChildren();
  const w = r.image.analysedWidth;
  const h = r.image.analysedHeight;
  for (const c of r.cells) {
    const tr = document.createElement('tr');
    tr.dataset.cellId = String(c.id);
    const cells = [String(c.id), c.class, c.probability.toFixed(3), `${c.bbox.x}, ${c.bbox.y}, ${c.bbox.width}, ${c.bbox.height}`, String(c.area)];
    cells.forEach((text, i) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (i === 1) td.className = c.class;
      tr.append(td);
    });
    tr.addEventListener('click', () => select(c.id));
    tbody.append(tr);

    const spot = document.createElement('div');
    spot.className = 'hotspot';
    spot.dataset.cellId = String(c.id);
    spot.title = `cell ${c.id}: ${c.class} (${c.probability.toFixed(3)})`;
    Object.assign(spot.style, {
      left: `${(100 * c.bbox.x) / w}%`,
      top: `${(100 * c.bbox.y) / h}%`,
      width: `${(100 * c.bbox.width) / w}%`,
      height: `${(100 * c.bbox.height) / h}%`,
    });
    spot.addEventListener('click', () => select(c.id));
    spots.append(spot);
  }
  $('explain').hidden = true;
  $('results').hidden = false;
  setStatus(`${name}: ${r.nucleatedCellCount} nucleated cells, ${r.plasmaCellCount} called plasma cells.`);
}

function select(id) {
  const c = result?.cells.find((x) => x.id === id);
  if (!c) return;
  selected = id;
  for (const el of document.querySelectorAll('[data-cell-id]')) el.classList.toggle('selected', Number(el.dataset.cellId) === id);
  $('explain-id').textContent = String(c.id);
  $('explain-class').textContent = c.class === 'plasma' ? 'plasma cell' : 'other nucleated cell';
  $('explain-prob').textContent = `P(plasma) = ${c.probability.toFixed(3)}`;
  if (c.explanation) {
    $('explain-crop').src = `data:image/png;base64,${c.explanation.cropPng}`;
    $('saliency').src = `data:image/png;base64,${c.explanation.heatmapPng}`;
  } else {
    $('saliency').removeAttribute('src');
    $('explain-crop').removeAttribute('src');
  }
  $('explain').hidden = false;
}

/** With an API key the report link cannot carry the header: fetch it and open the result instead. */
async function openReport(event) {
  if (!config.apiKey) return;
  event.preventDefault();
  const res = await fetch(`${apiBase}/report`, { headers: apiHeaders() });
  if (!res.ok) {
    const body = await readJson(res);
    setStatus(`No report: ${body.error?.message ?? res.status}`, true);
    return;
  }
  window.open(URL.createObjectURL(await res.blob()), '_blank', 'noopener');
}

function init() {
  $('report-link').href = `${apiBase}/report`;
  $('report-link').addEventListener('click', (e) => void openReport(e));
  $('file').addEventListener('change', (e) => {
    const file = e.target.files?.[0];
    if (file) void analyse(file);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer?.files?.[0];
    if (file) void analyse(file);
  });
  window.myeloscope = { get result() { return result; }, get selected() { return selected; } };
}

init();
