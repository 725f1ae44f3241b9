/**
 * The human report of one run: a single self-contained HTML file (pictures inlined as data URIs, no
 * scripts, no network) plus the same pictures as PNG files.
 */
import type { Evaluation, Estimate } from '../report.ts';
import type { AuditFinding, RunParams } from '../workflow.ts';
import { CHART_SCALE, confusionSpec, countSpec, curveSpec, renderChart, rocSpec, textRenders, type RenderedChart } from './charts.ts';
import { CALL_COLOURS, callsOverlayPng, type CalledCell } from './overlay.ts';

export interface OverlayInput {
  /** The held-out source image (processed key), as in the manifest. */
  image: string;
  /** Its processed PNG bytes. */
  png: Uint8Array;
  cells: CalledCell[];
}

export interface ReportInput {
  evaluation: Evaluation;
  params: RunParams;
  counts: { train: number; val: number; test: number; sources: number };
  backend?: string | undefined;
  overlays?: OverlayInput[];
  /** Class names by label value (manifest.classes). */
  classes?: [string, string];
  /** images task: the source-vs-label audit (manifest.audit). */
  audit?: AuditFinding[];
  /** What makes the numbers weak (RunState.warnings). */
  warnings?: string[];
}

function auditSection(classes: [string, string] | undefined, audit: AuditFinding[] | undefined): string {
  if (!audit) return '';
  const flagged = audit.filter((f) => f.separatesLabels);
  const names = classes ? `${esc(classes[0])} (0) and ${esc(classes[1])} (1)` : 'the two labels';
  return `<h2>Audit: do the labels give themselves away?</h2>
<p>Labels ${names} come from the folder each image was uploaded to. A classifier reaches 100 % by learning anything
that differs between the folders, not only the disease.</p>
${flagged.length ? `<p class="warning"><b>${flagged.length} warning(s):</b></p><ul>${flagged.map((f) => `<li>${esc(f.message)}</li>`).join('')}</ul>` : '<p>Nothing but the labels themselves was found to separate the classes.</p>'}
<table><tr><th>attribute</th><th>separates labels</th>${(classes ?? []).map((c) => `<th>${esc(c)}</th>`).join('')}</tr>
${audit
  .map(
    (f) =>
      `<tr><td>${f.attribute}</td><td>${f.separatesLabels ? '<b>yes</b>' : 'no'}</td>${(classes ?? []).map((c) => `<td>${esc((f.valuesByLabel[c] ?? []).join(', '))}</td>`).join('')}</tr>`,
  )
  .join('\n')}
</table>`;
}

export interface Picture {
  /** File name, e.g. `roc.png` */
  name: string;
  title: string;
  png: Buffer;
}

export interface RenderedReport {
  html: string;
  pictures: Picture[];
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const num = (v: number | null | undefined, digits = 3): string => (v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits));

function ciText(e: Estimate, digits = 3): string {
  return e.ci ? `${e.ci[0].toFixed(digits)} – ${e.ci[1].toFixed(digits)}` : 'n/a';
}

function estimateRow(name: string, e: Estimate, digits = 3): string {
  const skipped = e.skipped ? `${e.skipped} skipped (undefined)` : '';
  return `<tr><th>${esc(name)}</th><td>${num(e.value, digits)}</td><td>${ciText(e, digits)}</td><td>${skipped}</td></tr>`;
}

const dataUri = (png: Buffer): string => `data:image/png;base64,${png.toString('base64')}`;

/** Renders the charts and overlays and assembles the HTML. Deterministic for the same input. */
export async function renderReport(input: ReportInput): Promise<RenderedReport> {
  const e = input.evaluation;
  const iv = e.intervals;
  const charts: { name: string; title: string; chart: RenderedChart }[] = [];
  if (e.training && e.training.epochs.length) {
    charts.push({ name: 'loss.png', title: 'Loss per epoch', chart: await renderChart(curveSpec(e.training.epochs, 'loss')) });
    charts.push({ name: 'accuracy.png', title: 'Accuracy per epoch', chart: await renderChart(curveSpec(e.training.epochs, 'accuracy')) });
  }
  charts.push({ name: 'confusion-matrix.png', title: 'Confusion matrix', chart: await renderChart(confusionSpec(e.confusionMatrix, iv.confusionMatrix)) });
  if (e.rocCurve.length) charts.push({ name: 'roc.png', title: 'ROC curve', chart: await renderChart(rocSpec(e.rocCurve, e.rocAuc, iv.rocAuc.ci)) });
  if (e.perImage.length) charts.push({ name: 'counts.png', title: 'Plasma-cell count per image', chart: await renderChart(countSpec(e.perImage)) });
  const overlays: Picture[] = [];
  for (const [i, o] of (input.overlays ?? []).entries()) {
    const base = (o.image.split('/').pop() ?? `image-${i}`).replace(/\.[^.]+$/, '').replace(/[^A-Za-z0-9._-]/g, '_');
    overlays.push({ name: `overlay-${base}.png`, title: o.image, png: await callsOverlayPng(o.png, o.cells) });
  }
  // Without system fonts librsvg drops the text of the PNGs; the browser can still draw the SVG's text.
  const inlineSvg = !(await textRenders());
  const figure = (c: (typeof charts)[number]): string =>
    `<figure>${inlineSvg ? c.chart.svg : `<img alt="${esc(c.title)}" width="${c.chart.width / CHART_SCALE}" src="${dataUri(c.chart.png)}">`}<figcaption>${esc(c.title)}</figcaption></figure>`;

  const p = input.params;
  const cm = e.confusionMatrix;
  const pct = Math.round(e.bootstrap.confidence * 100);
  const training = e.training;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Myeloscope run ${esc(e.runId)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td{font-variant-numeric:tabular-nums}figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.9em;color:#555}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}.overlays img{max-width:480px}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;border:2px solid}
</style></head><body>
<h1>Myeloscope: held-out evaluation of run <code>${esc(e.runId)}</code></h1>
<p class="note">Research software, not a medical device; nothing here is a diagnosis.</p>
${input.warnings?.length ? `<p class="warning note"><b>Read with care:</b></p><ul>${input.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>` : ''}

<h2>Headline (held-out split: ${e.n} cells from ${e.images} source images)</h2>
<p>${pct} % intervals: percentile bootstrap resampling <b>held-out source images</b> with replacement (all cells of a
drawn image come along), ${e.bootstrap.replicates} replicates, seed ${e.bootstrap.seed}. A replicate where a metric is
undefined (e.g. AUC when the drawn images hold one class only) is skipped for that metric and counted.</p>
<table><tr><th>metric</th><th>value</th><th>${pct} % interval</th><th>replicates skipped</th></tr>
${estimateRow('ROC AUC', iv.rocAuc)}
${estimateRow('accuracy (threshold ' + e.threshold + ')', iv.accuracy)}
${estimateRow('balanced accuracy', iv.balancedAccuracy)}
${estimateRow('log loss (nats)', iv.loss)}
${estimateRow('plasma-cell count, mean absolute error per image', iv.meanAbsCountError, 2)}
${estimateRow('plasma-cell count, mean signed error per image (bias)', iv.meanCountError, 2)}
</table>
${e.rocAucUndefinedReason ? `<p>ROC AUC is undefined: ${esc(e.rocAucUndefinedReason)}.</p>` : ''}

<h3>Per class</h3>
<table><tr><th>class</th><th>support</th><th>precision</th><th>${pct} % interval</th><th>recall</th><th>${pct} % interval</th><th>F1</th><th>${pct} % interval</th></tr>
${(['plasma', 'other'] as const)
  .map((k) => {
    const c = iv.classes[k];
    return `<tr><th>${k}</th><td>${e.classes[k].support}</td><td>${num(c.precision.value)}</td><td>${ciText(c.precision)}</td><td>${num(c.recall.value)}</td><td>${ciText(c.recall)}</td><td>${num(c.f1.value)}</td><td>${ciText(c.f1)}</td></tr>`;
  })
  .join('\n')}
</table>

<h3>Confusion matrix (cells; intervals of the counts)</h3>
<table><tr><th>mask label \\ model's call</th><th>other</th><th>plasma</th></tr>
<tr><th>other</th><td>${cm.tn} [${ciText(iv.confusionMatrix.tn, 0)}]</td><td>${cm.fp} [${ciText(iv.confusionMatrix.fp, 0)}]</td></tr>
<tr><th>plasma</th><td>${cm.fn} [${ciText(iv.confusionMatrix.fn, 0)}]</td><td>${cm.tp} [${ciText(iv.confusionMatrix.tp, 0)}]</td></tr>
</table>

<h2>Pictures</h2>
${charts.map(figure).join('\n')}

<h2>The model's calls on held-out images</h2>
<p>Boxes from the segmentation; colour = the model's call at threshold ${e.threshold}:
<span class="swatch" style="border-color:${CALL_COLOURS.plasma}"></span> plasma cell,
<span class="swatch" style="border-color:${CALL_COLOURS.other}"></span> other nucleated cell.
Solid = agrees with the mask label, dashed = disagrees.</p>
<div class="overlays">${overlays.map((o) => `<figure><img alt="${esc(o.title)}" src="${dataUri(o.png)}"><figcaption>${esc(o.title)}</figcaption></figure>`).join('\n')}</div>

<h2>Plasma cells per held-out image</h2>
<table><tr><th>image</th><th>cells</th><th>plasma (mask)</th><th>plasma (model)</th><th>error</th></tr>
${e.perImage.map((r) => `<tr><td>${esc(r.image)}</td><td>${r.cells}</td><td>${r.plasmaTrue}</td><td>${r.plasmaPredicted}</td><td>${r.error > 0 ? '+' : ''}${r.error}</td></tr>`).join('\n')}
</table>

${auditSection(input.classes, input.audit)}

<h2>Data, split and training</h2>
<table>
<tr><th>source images (with masks)</th><td>${input.counts.sources}</td></tr>
<tr><th>cells: train / validation / test</th><td>${input.counts.train} / ${input.counts.val} / ${input.counts.test}</td></tr>
<tr><th>held-out plasma cells (mask label)</th><td>${e.positives} of ${e.n}</td></tr>
<tr><th>split rule</th><td>by source image: all cells of an image fall in one split (test fraction ${p.testFraction}, validation fraction ${p.valFraction}, seed ${p.seed})</td></tr>
<tr><th>backend</th><td>${esc(input.backend ?? training?.backend ?? 'unknown')}</td></tr>
<tr><th>training time</th><td>${training?.seconds ? `${training.seconds.toFixed(1)} s` : 'n/a'}${training && training.shards > 1 ? ` (each batch's gradient computed in ${training.shards} threads)` : ''}</td></tr>
<tr><th>parameters</th><td><code>${esc(JSON.stringify(p))}</code></td></tr>
</table>
${
  training && training.epochs.length
    ? `<table><tr><th>epoch</th><th>train loss</th><th>train acc</th><th>val loss</th><th>val acc</th></tr>
${training.epochs.map((x) => `<tr><td>${x.epoch}</td><td>${num(x.loss, 4)}</td><td>${num(x.acc)}</td><td>${num(x.valLoss, 4)}</td><td>${num(x.valAcc)}</td></tr>`).join('\n')}
</table>`
    : '<p>No training history was found for this run.</p>'
}

<h2>What this means, and what it does not</h2>
${p.task === 'cells' ? '' : `<p class="note">This run's task is <b>${esc(String(p.task))}</b>, not the cell task: the class names above follow the cell task's wording (plasma = label 1), and image-level labels from folders may encode where an image came from rather than what it shows.</p>`}
<ul>
<li>It measures how well the model tells a <b>plasma cell from another nucleated cell</b>, one cell at a time, on
images it never saw in training, against labels derived from the SegPC-2021 plasma-cell masks.</li>
<li>It is <b>not a diagnosis</b> and says nothing about telling myeloma from health: every image comes from a myeloma
patient, so there is no healthy image-level class.</li>
<li>One lab, one stain (Jenner/Wright-Giemsa), one set of microscopes: performance on other labs, stains or scanners is unknown.</li>
<li>Patients are not identified in the data, so images of one patient may fall on both sides of the split; the
held-out figures may therefore be optimistic. The split keeps whole images apart, never cells of one image.</li>
<li>With ${e.images} held-out images the intervals are wide; they reflect image-to-image variation, not
patient-to-patient or lab-to-lab variation. Cell labels inherit the segmentation's errors (missed or merged cells).</li>
</ul>
</body></html>
`;
  const pictures: Picture[] = [...charts.map((c) => ({ name: c.name, title: c.title, png: c.chart.png })), ...overlays];
  return { html, pictures };
}
