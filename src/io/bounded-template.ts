/**
 * A Jinja template rendered with bounded work and memory. A chat template comes from a model
 * folder, i.e. from whoever made the checkpoint; `{% for i in range(100000000) %}` or a string
 * doubled in a loop would otherwise hang the process or exhaust memory.
 *
 * @huggingface/jinja's Interpreter evaluates every statement and expression through `evaluate`;
 * counting those calls and the items of every list they return bounds the time, and counting the characters of every string they return
 * bounds what loops can accumulate. `range` (the one global that allocates in bulk) is bounded by
 * the same step budget.
 */
import { Environment, Interpreter, Template } from '@huggingface/jinja';

/** Evaluation steps per render; a real chat template for one turn takes a few hundred. */
export const TEMPLATE_MAX_STEPS = 100_000;
/** Characters of all strings produced during one render; a real prompt is a few kilobytes. */
export const TEMPLATE_MAX_CHARS = 16 * 1024 * 1024;

export class TemplateLimitError extends Error {}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** Python's time.strftime in the C locale, for the directives chat templates use. */
function strftime(date: Date, format: string): string {
  const pad2 = (n: number) => String(n).padStart(2, '0');
  return format.replace(/%[YmdbBHMS%]/g, (directive) => {
    switch (directive) {
      case '%Y': return String(date.getFullYear());
      case '%m': return pad2(date.getMonth() + 1);
      case '%d': return pad2(date.getDate());
      case '%b': return MONTHS[date.getMonth()]!.slice(0, 3);
      case '%B': return MONTHS[date.getMonth()]!;
      case '%H': return pad2(date.getHours());
      case '%M': return pad2(date.getMinutes());
      case '%S': return pad2(date.getSeconds());
      default: return '%';
    }
  });
}

/** Python's range(), refusing to build more items than a render may evaluate. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() step must not be zero');
  const length = Math.max(0, Math.ceil((stop - start) / step));
  if (length > TEMPLATE_MAX_STEPS) throw new TemplateLimitError(`range() of ${length} items exceeds the template limit of ${TEMPLATE_MAX_STEPS}`);
  return Array.from({ length }, (_, i) => start + i * step);
}

/** The globals @huggingface/jinja's Template.render installs, with `range` bounded. */
const GLOBALS: Record<string, unknown> = {
  false: false, true: true, none: null, False: false, True: true, None: null,
  raise_exception: (message: string) => { throw new Error(message); },
  range: boundedRange,
  strftime_now: (format: string) => strftime(new Date(), format),
};

/** The part of the Interpreter we use (the package's .d.ts files do not resolve under NodeNext). */
interface RuntimeValue {
  value: unknown;
}
interface JinjaInterpreter {
  run(program: unknown): RuntimeValue;
  evaluate(statement: unknown, environment: unknown): RuntimeValue;
}
const InterpreterBase = Interpreter as unknown as new (environment: unknown) => JinjaInterpreter;

class BoundedInterpreter extends InterpreterBase {
  private steps = 0;
  private chars = 0;

  override evaluate(statement: unknown, environment: unknown): RuntimeValue {
    if (++this.steps > TEMPLATE_MAX_STEPS) throw new TemplateLimitError(`rendering took more than ${TEMPLATE_MAX_STEPS} steps`);
    const value = super.evaluate(statement, environment);
    // A loop walks its iterable without evaluating an empty body: count the items it may walk.
    const items = Array.isArray(value.value) ? value.value.length : value.value instanceof Map ? value.value.size : 0;
    if ((this.steps += items) > TEMPLATE_MAX_STEPS) throw new TemplateLimitError(`rendering took more than ${TEMPLATE_MAX_STEPS} steps`);
    if (typeof value.value === 'string') {
      this.chars += value.value.length;
      if (this.chars > TEMPLATE_MAX_CHARS) throw new TemplateLimitError(`rendering produced more than ${TEMPLATE_MAX_CHARS} characters`);
    }
    return value;
  }
}

export class BoundedTemplate {
  private readonly parsed: Template['parsed'];

  constructor(source: string) {
    this.parsed = new Template(source).parsed;
  }

  render(variables: Record<string, unknown>): string {
    const env = new Environment();
    for (const [name, value] of Object.entries({ ...GLOBALS, ...variables })) env.set(name, value);
    const result = new BoundedInterpreter(env).run(this.parsed).value;
    if (typeof result !== 'string') throw new Error('the template did not render to text');
    return result;
  }
}
