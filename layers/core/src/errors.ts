/**
 * Named errors of the pure core. A handler maps each to an outcome: user input errors end in quarantine
 * (pipeline) or a 4xx (API); anything else is a bug or an outage and is rethrown so the platform retries.
 */
export class MyeloscopeError extends Error {
  /** Machine-readable reason, stable across versions: used in quarantine records and API errors. */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The bytes are not an image format Myeloscope reads (or not an image at all). */
export class UnsupportedFormatError extends MyeloscopeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unsupported-format', message, options);
  }
}

/** The format is known but the file cannot be decoded (truncated, corrupt). */
export class CorruptImageError extends MyeloscopeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('corrupt-image', message, options);
  }
}

/** The file is empty. */
export class EmptyInputError extends MyeloscopeError {
  constructor(message = 'the file is empty (0 bytes)') {
    super('empty-input', message);
  }
}

/** The image is decodable but outside the limits (too large, too small). */
export class ImageLimitError extends MyeloscopeError {
  constructor(message: string) {
    super('image-limit', message);
  }
}

/** Input to a workflow step or command is invalid. */
export class InvalidInputError extends MyeloscopeError {
  constructor(message: string) {
    super('invalid-input', message);
  }
}

/** Errors caused by the input itself: retrying will not help. */
export function isInputError(err: unknown): err is MyeloscopeError {
  return (
    err instanceof UnsupportedFormatError ||
    err instanceof CorruptImageError ||
    err instanceof EmptyInputError ||
    err instanceof ImageLimitError ||
    err instanceof InvalidInputError
  );
}
