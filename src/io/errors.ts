/**
 * The one error type users see for bad input: it names the file (when there is one) and says what
 * was wrong and what was expected, so the CLI can print it without a stack trace.
 */
export class CorematchingError extends Error {
  readonly file: string | undefined;

  constructor(message: string, file?: string) {
    super(file === undefined ? message : `${file}: ${message}`);
    this.name = 'CorematchingError';
    this.file = file;
  }
}
