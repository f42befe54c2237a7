/**
 * Typed arrays handed out from buffers kept and reused while large enough: for data that is
 * rebuilt again and again (compact FFN weights per request, a checkpoint tensor on its way to
 * being quantized), where fresh arrays would cost page faults and leave garbage the collector
 * sees late.
 */
type Typed = Float32Array | Int8Array | Uint8Array;

export class ReusableBuffers {
  private buffers = new Map<string, ArrayBuffer>();

  /** `length` elements of `kind`, a view into the buffer kept under `key`: valid until its next use. */
  take<T extends Typed>(key: string, kind: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }, length: number): T {
    const bytes = length * kind.BYTES_PER_ELEMENT;
    let buffer = this.buffers.get(key);
    if (buffer === undefined || buffer.byteLength < bytes) this.buffers.set(key, (buffer = new ArrayBuffer(bytes)));
    return new kind(buffer, 0, length);
  }
}
