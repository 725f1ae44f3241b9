/**
 * Child process of the inference bench: starts the local cloud on an existing state directory (a model is
 * already published there), prints one JSON line {"ready": ms from process start, "url": ...}, then on
 * "stop" from stdin prints {"maxRssBytes": ...} (process RSS high-water, local S3 included: same process)
 * and exits. Its cold start is what a fresh API process pays.
 *
 *   node --import tsx test/bench/serve.ts STATE_DIR
 */
import { createInterface } from 'node:readline';
import { startLocalCloud } from '../../infra/local/cloud.ts';
import { setLogSink } from '../../layers/aws/src/events.ts';

const stateDir = process.argv[2];
if (stateDir === undefined) throw new Error('usage: serve.ts STATE_DIR');
setLogSink(() => undefined);
const cloud = await startLocalCloud({ stateDir, fresh: false, s3Port: 0, apiPort: 0 });
console.log(JSON.stringify({ ready: performance.now(), url: cloud.api.url }));
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'stop') break;
}
console.log(JSON.stringify({ maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
await cloud.close();
process.exit(0);
