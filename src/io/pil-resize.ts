/**
 * A port of Pillow's Image.resize for 8-bit RGB images (libImaging/Resample.c for BILINEAR and
 * BICUBIC, libImaging/Geometry.c ImagingScaleAffine for NEAREST), bit-identical to PIL.
 *
 * transformers' slow image processors resize a uint8 PIL image, so matching their pixel_values
 * exactly needs PIL's exact integer arithmetic: coefficients from a filter whose support widens
 * with the downscale factor, normalised per output pixel, rounded to 22-bit fixed point; one
 * pass per axis, each rounded and clipped to uint8. Ported from Pillow 13.0.0's sources.
 */
import type { RgbImage } from './image.js';

/** PIL's Image.Resampling codes, as preprocessor_config.json's "resample" spells them. */
export const NEAREST = 0;
export const BILINEAR = 2;
export const BICUBIC = 3;
export type Resample = typeof NEAREST | typeof BILINEAR | typeof BICUBIC;

interface Filter {
  support: number;
  weight(x: number): number;
}

// Written with the same operation order as Resample.c so every double rounds the same way.
const BILINEAR_FILTER: Filter = {
  support: 1,
  weight(x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
  },
};

// Keys' cubic convolution with a = -0.5.
const BICUBIC_FILTER: Filter = {
  support: 2,
  weight(x) {
    if (x < 0) x = -x;
    if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * -0.5;
    return 0;
  },
};

/** 32 bits minus 8 for the pixel value minus 2 for negative lobes and sums above 1. */
const PRECISION_BITS = 32 - 8 - 2;

interface Coeffs {
  /** Taps per output pixel (the stride of `weights`). */
  ksize: number;
  /** Per output pixel: first input index and number of taps. */
  first: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output pixel. */
  weights: Int32Array;
}

/** precompute_coeffs + normalize_coeffs_8bpc for a box of [0, inSize). */
function precomputeCoeffs(inSize: number, outSize: number, filter: Filter): Coeffs {
  const scale = inSize / outSize;
  // Downscaling widens the filter so every input pixel contributes (antialiasing).
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterScale = 1 / filterScale;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * invFilterScale);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x]! / ww : k[x]!;
      // Round half away from zero, then truncate, as normalize_coeffs_8bpc does.
      weights[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    first[xx] = xmin;
    count[xx] = xmax;
  }
  return { ksize, first, count, weights };
}

/** clip8: drop the fixed-point fraction (arithmetic shift = floor) and clamp to a byte. */
function clip8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

const HALF = 1 << (PRECISION_BITS - 1);

/** Resamples rows [row0, row0 + rows) of `src` horizontally to `c`'s output width. */
function horizontal(src: RgbImage, c: Coeffs, row0: number, rows: number): RgbImage {
  const width = c.first.length;
  const out = new Uint8Array(width * rows * 3);
  for (let y = 0; y < rows; y++) {
    const inRow = (y + row0) * src.width * 3;
    for (let xx = 0; xx < width; xx++) {
      const kOff = xx * c.ksize;
      const n = c.count[xx]!;
      let p = inRow + c.first[xx]! * 3;
      let r = HALF, g = HALF, b = HALF;
      for (let x = 0; x < n; x++, p += 3) {
        const w = c.weights[kOff + x]!;
        r += src.data[p]! * w;
        g += src.data[p + 1]! * w;
        b += src.data[p + 2]! * w;
      }
      const o = (y * width + xx) * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return { width, height: rows, data: out };
}

/** Resamples `src` vertically; `c.first` is relative to `src`'s first row, shifted by `row0`. */
function vertical(src: RgbImage, c: Coeffs, row0: number): RgbImage {
  const height = c.first.length;
  const stride = src.width * 3;
  const out = new Uint8Array(stride * height);
  for (let yy = 0; yy < height; yy++) {
    const kOff = yy * c.ksize;
    const n = c.count[yy]!;
    const base = (c.first[yy]! - row0) * stride;
    for (let i = 0; i < stride; i++) {
      let acc = HALF;
      for (let y = 0, p = base + i; y < n; y++, p += stride) acc += src.data[p]! * c.weights[kOff + y]!;
      out[yy * stride + i] = clip8(acc);
    }
  }
  return { width: src.width, height, data: out };
}

/**
 * NEAREST goes through ImagingScaleAffine: source coordinates are accumulated by repeated
 * addition of the scale (not multiplied), so we accumulate too to pick the same pixels.
 */
function nearest(src: RgbImage, width: number, height: number): RgbImage {
  const out = new Uint8Array(width * height * 3);
  const xs = new Int32Array(width);
  const sx = src.width / width;
  let xo = sx * 0.5;
  for (let x = 0; x < width; x++, xo += sx) xs[x] = Math.trunc(xo);
  const sy = src.height / height;
  let yo = sy * 0.5;
  for (let y = 0; y < height; y++, yo += sy) {
    const yi = Math.trunc(yo);
    if (yi >= src.height) continue; // PIL leaves a pixel mapped outside the source at 0
    for (let x = 0; x < width; x++) {
      const xi = xs[x]!;
      if (xi >= src.width) continue;
      const o = (y * width + x) * 3;
      const p = (yi * src.width + xi) * 3;
      out[o] = src.data[p]!;
      out[o + 1] = src.data[p + 1]!;
      out[o + 2] = src.data[p + 2]!;
    }
  }
  return { width, height, data: out };
}

/** PIL's `image.resize((width, height), resample)` for an RGB image. */
export function pilResize(src: RgbImage, width: number, height: number, resample: Resample): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`pilResize: bad output size ${width}x${height}`);
  }
  if (width === src.width && height === src.height) {
    return { width, height, data: src.data.slice() };
  }
  if (resample === NEAREST) return nearest(src, width, height);
  const filter = resample === BICUBIC ? BICUBIC_FILTER : BILINEAR_FILTER;
  const vert = precomputeCoeffs(src.height, height, filter);
  const horiz = () => precomputeCoeffs(src.width, width, filter);
  // Like ImagingResampleInner, skip a pass whose size is unchanged. Pillow 13 runs the vertical
  // pass first when the height loses more than twice as many pixels as the width (earlier
  // Pillows always go horizontal first); as rounding happens between passes, the order shows.
  if (src.height - height > 0 && src.height - height > (src.width - width) * 2) {
    const tall = vertical(src, vert, 0);
    return width !== src.width ? horizontal(tall, horiz(), 0, height) : tall;
  }
  // Horizontal first, over only the source rows the vertical pass will read.
  let img = src;
  let row0 = 0;
  if (width !== src.width) {
    row0 = vert.first[0]!;
    const rowEnd = vert.first[height - 1]! + vert.count[height - 1]!;
    img = horizontal(src, horiz(), row0, rowEnd - row0);
  }
  return height !== src.height ? vertical(img, vert, row0) : img;
}
