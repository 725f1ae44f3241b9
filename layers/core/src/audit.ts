/**
 * The images task's audit. With labels taken from the folder an image was uploaded to, a classifier can
 * reach 100 % by learning where an image came from (its size, format, scanner, file naming) rather than the
 * disease: the public project this idea came from did exactly that. The audit looks at what other than the
 * pixels' content differs between labels and warns when an attribute alone separates them.
 */
import type { AuditFinding } from './workflow.ts';

export interface AuditInput {
  label: string;
  /** The raw object key the image came from (raw/<dataset>/<label>/...), when known. */
  sourceKey: string | null;
  /** Size of the processed image (after the aspect-keeping resize, which never enlarges). */
  width: number;
  height: number;
  /** Acquisition metadata recorded at preprocessing (e.g. source size, bit depth, EXIF camera), when any. */
  acquisition?: string;
}

function folderOf(key: string | null): string {
  if (!key) return '(unknown)';
  const parts = key.split('/');
  // raw/<dataset>/<label>/[sub/folders/]<file>: what lies between the label and the file, else the naming.
  const sub = parts.slice(3, -1).filter((p) => p !== 'masks');
  if (sub.length) return sub.join('/');
  const file = parts[parts.length - 1] ?? '';
  return `name pattern ${file.replace(/\d+/g, '#').replace(/\.[^.]*$/, '')}`;
}

function formatOf(key: string | null): string {
  const m = key ? /\.([^./]+)$/.exec(key) : null;
  return m ? (m[1] as string).toLowerCase().replace('jpeg', 'jpg').replace('tiff', 'tif') : '(none)';
}

const ATTRIBUTES: { attribute: AuditFinding['attribute']; value: (x: AuditInput) => string | undefined; what: string }[] = [
  { attribute: 'folder', value: (x) => folderOf(x.sourceKey), what: 'the folder or file naming they were uploaded with' },
  { attribute: 'size', value: (x) => `${x.width}x${x.height}`, what: 'their pixel size' },
  { attribute: 'format', value: (x) => formatOf(x.sourceKey), what: 'their file format' },
  { attribute: 'acquisition', value: (x) => x.acquisition, what: 'their acquisition metadata' },
];

export function auditImageLabels(items: readonly AuditInput[]): AuditFinding[] {
  const labels = [...new Set(items.map((x) => x.label))].sort();
  const findings: AuditFinding[] = [];
  for (const { attribute, value, what } of ATTRIBUTES) {
    const byLabel = new Map<string, Map<string, number>>();
    let known = 0;
    for (const x of items) {
      const v = value(x);
      if (v === undefined) continue;
      known++;
      const counts = byLabel.get(x.label) ?? new Map<string, number>();
      counts.set(v, (counts.get(v) ?? 0) + 1);
      byLabel.set(x.label, counts);
    }
    if (known === 0) continue;
    const owners = new Map<string, Set<string>>();
    for (const [label, counts] of byLabel) for (const v of counts.keys()) (owners.get(v) ?? owners.set(v, new Set()).get(v))?.add(label);
    const separatesLabels = labels.length > 1 && byLabel.size === labels.length && [...owners.values()].every((s) => s.size === 1);
    const valuesByLabel: Record<string, string[]> = {};
    for (const label of labels) {
      const counts = byLabel.get(label);
      valuesByLabel[label] = counts ? [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([v, n]) => `${v} (${n})`) : [];
    }
    findings.push({
      attribute,
      valuesByLabel,
      separatesLabels,
      message: separatesLabels
        ? `WARNING: the labels coincide with ${what}: a classifier can reach 100 % from that alone, without learning the disease. Do not trust the accuracy of this run.`
        : `labels do not coincide with ${what}`,
    });
  }
  return findings;
}
