/** GET /report: the evaluation report of the latest (or a given) published run, read from the models bucket. */
import type { APIGatewayProxyResult } from 'aws-lambda';
import { LATEST_POINTER_KEY, modelKeys } from '../../layers/core/src/keys.ts';
import type { S3Store } from '../../layers/aws/src/s3.ts';
import type { LatestPointer } from '../publish/index.ts';
import { CORS_HEADERS, NoModelError, NotFoundError } from './http.ts';

/** Lambda's synchronous response limit is 6 MB; stay clear of it. */
const MAX_INLINE = 5 * 1024 * 1024;

export async function latestReport(store: S3Store, runIdParam: string | undefined): Promise<APIGatewayProxyResult> {
  let runId = runIdParam;
  if (runId === undefined) {
    if (!(await store.exists(LATEST_POINTER_KEY))) throw new NoModelError();
    runId = (await store.getJson<LatestPointer>(LATEST_POINTER_KEY)).runId;
  }
  const keys = modelKeys(runId);
  for (const [key, type] of [[`${keys.dir}report.html`, 'text/html; charset=utf-8'], [keys.report, 'application/json']] as const) {
    const head = await store.head(key);
    if (!head) continue;
    if (head.size > MAX_INLINE) throw new NotFoundError('report-too-large', `${key} is ${head.size} bytes, over what the API can return: read it from the models bucket`);
    const body = Buffer.from(await store.get(key));
    return {
      statusCode: 200,
      headers: { 'content-type': type, 'x-myeloscope-run-id': runId, 'cache-control': 'no-cache', ...CORS_HEADERS },
      body: body.toString('utf8'),
    };
  }
  throw new NotFoundError('no-report', `run ${runId} has no report.html or report.json in the models bucket`);
}
