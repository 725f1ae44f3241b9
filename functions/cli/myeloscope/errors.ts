/**
 * Exit codes scripts can rely on, and the mapping of every failure to one of them with a one-line message:
 * user mistakes never print a stack trace (MYELOSCOPE_DEBUG=1 shows it).
 */
export const EXIT = {
  /** Done; for train/follow: the run succeeded; for status: running or succeeded. */
  ok: 0,
  /** A run failed, or a request to AWS, the local cloud or the API failed. */
  failed: 1,
  /** Usage error: unknown command or option, bad argument, invalid run input. */
  usage: 2,
  /** Not found or not configured: a missing file, execution, bucket, or endpoint/ARN setting. */
  notFound: 3,
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0  ok (train --follow / follow: the run succeeded; status: RUNNING or SUCCEEDED)
  1  a run failed (FAILED, TIMED_OUT, ABORTED) or a request failed (AWS, local cloud, API)
  2  usage error: unknown command or option, bad argument, invalid run input
  3  not found or not configured: missing file or folder, unknown execution or bucket, missing
     setting (STATE_MACHINE_ARN, RAW_BUCKET, MYELOSCOPE_API_URL or the matching flag)`;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

const NOT_FOUND = new Set(['ExecutionDoesNotExist', 'StateMachineDoesNotExist', 'NoSuchBucket', 'NoSuchKey', 'NotFound', 'ResourceNotFoundException', 'WorkflowConfigError', 'CredentialsProviderError']);
// ExecutionAlreadyExists: the --name is taken (a usage error: pick another name, or leave it out).
const USAGE = new Set(['InvalidInputError', 'ExecutionAlreadyExists', 'InvalidArn', 'InvalidName', 'InvalidExecutionInput', 'InvalidToken', 'ValidationException']);
const NETWORK = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET', 'ETIMEDOUT', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

function networkCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK.has(code)) return code;
    // AggregateError (happy eyeballs) keeps the connection errors in .errors.
    const errors = (e as { errors?: unknown }).errors;
    if (Array.isArray(errors)) for (const inner of errors) if (NETWORK.has(String((inner as { code?: unknown }).code))) return String((inner as { code?: unknown }).code);
  }
  return undefined;
}

/** Any thrown value as a CliError; `where` names the endpoint for connection errors. */
export function toCliError(err: unknown, where?: string): CliError {
  if (err instanceof CliError) return err;
  const name = err instanceof Error ? err.name : '';
  const message = err instanceof Error ? err.message : String(err);
  const code = networkCode(err);
  if (code) {
    return new CliError(`cannot reach ${where ?? 'the service'} (${code}); is the endpoint right, and is \`myeloscope serve\` running for the local cloud?`, EXIT.failed);
  }
  if (err instanceof TypeError && message === 'fetch failed') {
    // fetch's own network errors (bad port, TLS, DNS) keep the reason in cause.
    const cause = (err as { cause?: unknown }).cause;
    return new CliError(`cannot reach ${where ?? 'the service'} (${cause instanceof Error ? cause.message : 'network error'})`, EXIT.failed);
  }
  if (name === 'CredentialsProviderError') return new CliError(`no AWS credentials: ${message} (for the local cloud, export the lines \`myeloscope serve\` prints)`, EXIT.notFound);
  if (NOT_FOUND.has(name)) return new CliError(message, EXIT.notFound);
  if (USAGE.has(name)) return new CliError(message, EXIT.usage);
  const e = new CliError(name && name !== 'Error' ? `${name}: ${message}` : message, EXIT.failed);
  e.stack = err instanceof Error ? err.stack : e.stack;
  return e;
}
