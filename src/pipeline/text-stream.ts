/**
 * Streams generated text: decodes token by token, cuts at the first stop string, and holds back
 * any tail that could still grow into a stop string, so nothing after a stop is ever shown.
 */
export interface IncrementalDecoder {
  push(id: number): string;
  flush(): string;
}

export class TextStream {
  private full = '';
  private shown = 0;
  private stopAt = -1;

  constructor(
    private readonly decoder: IncrementalDecoder,
    private readonly stopStrings: readonly string[],
  ) {}

  get stopped(): boolean {
    return this.stopAt >= 0;
  }

  /** The text so far, cut before the stop string when one occurred. */
  get text(): string {
    return this.stopped ? this.full.slice(0, this.stopAt) : this.full;
  }

  /** Adds a token; returns the newly printable text (possibly empty). */
  push(id: number): string {
    this.full += this.decoder.push(id);
    return this.release(false);
  }

  /** Ends the stream; returns whatever was held back. */
  finish(): string {
    if (!this.stopped) this.full += this.decoder.flush();
    return this.release(true);
  }

  private release(final: boolean): string {
    const hits = this.stopStrings.map((s) => this.full.indexOf(s)).filter((i) => i >= 0);
    if (hits.length > 0) this.stopAt = Math.min(...hits);
    const end = this.stopped ? this.stopAt : final ? this.full.length : this.full.length - this.heldBack();
    if (end <= this.shown) return '';
    const piece = this.full.slice(this.shown, end);
    this.shown = end;
    return piece;
  }

  /** Length of the longest tail of the text that is a proper prefix of a stop string. */
  private heldBack(): number {
    let longest = 0;
    for (const stop of this.stopStrings) {
      for (let n = Math.min(stop.length - 1, this.full.length); n > longest; n--) {
        if (this.full.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}
