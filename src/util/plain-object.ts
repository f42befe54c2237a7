/** A JSON-style object: not null, not an array (JSON.parse output and option bags are checked with it). */
export const isPlainObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
