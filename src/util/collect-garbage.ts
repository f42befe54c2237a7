/**
 * A full garbage collection, where the runtime allows one. Loading a model converts each layer's
 * weights through several short-lived buffers (the checkpoint's tensors, quantized copies, the
 * serialised graph ONNX Runtime copies them from); V8 frees such ArrayBuffers only when it next
 * collects, which while loading can be gigabytes later. Collecting after each layer keeps peak
 * memory at the weights plus about one layer.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let collect: (() => void) | null | undefined;

export function collectGarbage(): void {
  if (collect === undefined) {
    try {
      // The documented way to reach V8's gc() without starting node with --expose-gc.
      v8.setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as () => void;
    } catch {
      collect = null;
    }
  }
  collect?.();
}
