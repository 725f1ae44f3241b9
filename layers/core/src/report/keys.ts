/**
 * Where the human report sits under a run's folder (runs/<runId>/) or a published model's (models/<runId>/).
 * Kept here rather than in keys.ts while the report is new; both buckets use the same relative layout.
 */
export function reportKeys(dir: string) {
  if (!dir.endsWith('/')) throw new RangeError(`report folder must end with "/": ${dir}`);
  return {
    html: `${dir}report.html`,
    pictures: `${dir}report/`,
    picture: (name: string) => `${dir}report/${name}`,
  };
}
