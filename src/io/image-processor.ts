/**
 * transformers' CLIPImageProcessor and SiglipImageProcessor, configured from a checkpoint's
 * preprocessor_config.json, reproducing the slow PIL backend (CLIPImageProcessorPil,
 * SiglipImageProcessorPil in transformers 5) exactly: PIL resize of the uint8 image, center crop,
 * then rescale and normalise with numpy's float64/float32 rounding. Both classes run the same
 * steps; they differ only in the defaults for fields the config leaves out.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CorematchingError } from './errors.js';
import { readRegularTextFile } from './regular-file.js';
import { MAX_IMAGE_PIXELS, type RgbImage } from './image.js';
import { BICUBIC, BILINEAR, NEAREST, pilResize, type Resample } from './pil-resize.js';

export interface PreprocessedImage {
  /** [3, height, width], channel-major. */
  pixelValues: Float32Array;
  height: number;
  width: number;
}

/** Resize target: shortest edge to `shortestEdge` keeping the aspect ratio, or exactly height x width. */
type ResizeTarget = { shortestEdge: number } | { height: number; width: number };

interface Options {
  resize: ResizeTarget | null;
  resample: Resample;
  crop: { height: number; width: number } | null;
  rescaleFactor: number | null;
  /** Per channel, already rounded to float32 as numpy's normalize does. */
  norm: { mean: number[]; std: number[] } | null;
}

/** Class defaults (transformers' class attributes) for the switches a config may omit. */
const CLASSES: Record<string, { doCenterCrop: boolean }> = {
  CLIPImageProcessor: { doCenterCrop: true },
  SiglipImageProcessor: { doCenterCrop: false },
};

/** Validated reads of the raw JSON, each error naming the file and the field. */
class ConfigReader {
  constructor(
    private readonly file: string,
    private readonly raw: Record<string, unknown>,
  ) {}

  fail(field: string, problem: string): never {
    throw new CorematchingError(`field "${field}" ${problem}`, this.file);
  }

  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  required(field: string): unknown {
    if (!this.has(field)) this.fail(field, 'is missing');
    return this.raw[field];
  }

  flag(field: string, fallback: boolean): boolean {
    if (!this.has(field)) return fallback;
    const v = this.raw[field];
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  positiveNumber(field: string): number {
    const v = this.required(field);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(field, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  /** A scalar or one value per RGB channel, as numpy broadcasts it. */
  perChannel(field: string, nonZero: boolean): number[] {
    const v = this.required(field);
    const values = typeof v === 'number' ? [v, v, v] : v;
    if (!Array.isArray(values) || values.length !== 3 || !values.every((x) => typeof x === 'number' && Number.isFinite(x) && (!nonZero || x !== 0))) {
      this.fail(field, `must be a number or a list of 3 ${nonZero ? 'non-zero ' : ''}numbers, got ${JSON.stringify(v)}`);
    }
    return values as number[];
  }

  /** `crop_size`: {height, width}, or a bare int meaning a square (get_size_dict). */
  cropSize(field: string): { height: number; width: number } {
    const v = this.required(field);
    if (isPositiveInt(v)) return { height: v, width: v };
    return asHeightWidth(v) ?? this.fail(field, `must be {"height": int, "width": int} with sides 1..${MAX_PROCESSOR_SIDE}, got ${JSON.stringify(v)}`);
  }

  /** `size`: {shortest_edge}, {height, width}, or a bare int meaning shortest_edge (default_to_square=False). */
  resizeTarget(field: string): ResizeTarget {
    const v = this.required(field);
    if (isPositiveInt(v)) return { shortestEdge: v };
    const d = v as Record<string, unknown>;
    if (typeof v === 'object' && isPositiveInt(d.shortest_edge) && Object.keys(d).length === 1) {
      return { shortestEdge: d.shortest_edge };
    }
    return asHeightWidth(v) ?? this.fail(field, `must be {"shortest_edge": int} or {"height": int, "width": int} with sides 1..${MAX_PROCESSOR_SIDE}, got ${JSON.stringify(v)}`);
  }

  resample(field: string, fallback: Resample): Resample {
    if (!this.has(field)) return fallback;
    const v = this.raw[field];
    if (v === NEAREST || v === BILINEAR || v === BICUBIC) return v;
    this.fail(field, `must be 0 (NEAREST), 2 (BILINEAR) or 3 (BICUBIC), got ${JSON.stringify(v)}`);
  }
}

function asHeightWidth(v: unknown): { height: number; width: number } | null {
  const d = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || Object.keys(d).length !== 2) return null;
  return isPositiveInt(d.height) && isPositiveInt(d.width) ? { height: d.height, width: d.width } : null;
}

/** Largest `size` or `crop_size` side a processor config may ask for. */
const MAX_PROCESSOR_SIDE = 8192;

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_PROCESSOR_SIDE;
}

export class ImageProcessor {
  private constructor(
    private readonly opts: Options,
    /** The config file it was read from, for error messages. */
    readonly file: string,
  ) {}

  /** Height and width of every processed image, when the config fixes them (a crop or an exact
   * resize); null when they follow each image's aspect ratio. */
  get outputSize(): { height: number; width: number } | null {
    const { resize, crop } = this.opts;
    if (crop !== null) return crop;
    return resize !== null && 'height' in resize ? resize : null;
  }

  /**
   * Reads <dir>/preprocessor_config.json or, as transformers 5 saves it, the "image_processor"
   * entry of <dir>/processor_config.json. Switches (do_resize, do_center_crop, do_rescale,
   * do_normalize, resample) default like transformers' classes; the numbers the enabled steps
   * use (size, crop_size, rescale_factor, image_mean, image_std) must be present, since a silent
   * default for a checkpoint's statistics would quietly degrade every answer.
   */
  static load(dir: string): ImageProcessor {
    const standalone = join(dir, 'preprocessor_config.json');
    const combined = join(dir, 'processor_config.json');
    const useCombined = !existsSync(standalone) && existsSync(combined);
    const file = useCombined ? combined : standalone;
    if (!existsSync(file)) throw new CorematchingError('file not found (nor an "image_processor" entry in processor_config.json)', file);
    const text = readRegularTextFile(file, 'image processor config');
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new CorematchingError(`not valid JSON (${(err as Error).message})`, file);
    }
    if (useCombined) raw = (raw as Record<string, unknown> | null)?.image_processor;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CorematchingError(useCombined ? 'expected an "image_processor" object' : 'expected a JSON object', file);
    }
    const cfg = new ConfigReader(file, raw as Record<string, unknown>);

    // Old checkpoints only name a feature extractor; AutoImageProcessor maps it the same way.
    const typeField = cfg.has('image_processor_type') ? 'image_processor_type' : 'feature_extractor_type';
    const typeName = cfg.required(typeField);
    const base = typeof typeName === 'string' ? typeName.replace(/FeatureExtractor$/, 'ImageProcessor').replace(/(Fast|Pil)$/, '') : '';
    const cls = CLASSES[base];
    if (cls === undefined) {
      cfg.fail(typeField, `must be CLIPImageProcessor or SiglipImageProcessor (or their Fast variants), got ${JSON.stringify(typeName)}`);
    }

    const f32 = (xs: number[]) => xs.map(Math.fround);
    return new ImageProcessor({
      resize: cfg.flag('do_resize', true) ? cfg.resizeTarget('size') : null,
      resample: cfg.resample('resample', BICUBIC),
      crop: cfg.flag('do_center_crop', cls.doCenterCrop) ? cfg.cropSize('crop_size') : null,
      rescaleFactor: cfg.flag('do_rescale', true) ? cfg.positiveNumber('rescale_factor') : null,
      norm: cfg.flag('do_normalize', true) ? { mean: f32(cfg.perChannel('image_mean', false)), std: f32(cfg.perChannel('image_std', true)) } : null,
    }, file);
  }

  /** The image as the model sees it before rescaling: resized and center-cropped, uint8 RGB. */
  modelView(image: RgbImage): RgbImage {
    const { resize, resample, crop } = this.opts;
    let img = image;
    if (resize !== null) {
      const [h, w] = outputSize(img, resize);
      checkResizeBuffers(img, w, h);
      img = pilResize(img, w, h, resample);
    }
    if (crop === null) return img;
    const { height, width } = crop;
    // transformers' center_crop: offsets floor((in - out) / 2); a crop larger than the image
    // pads with zeros (before rescaling, so padding normalises like a black pixel).
    const top = Math.floor((img.height - height) / 2);
    const left = Math.floor((img.width - width) / 2);
    const data = new Uint8Array(height * width * 3);
    for (let y = 0; y < height; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= img.height) continue;
      for (let x = 0; x < width; x++) {
        const sx = x + left;
        if (sx < 0 || sx >= img.width) continue;
        data.set(img.data.subarray((sy * img.width + sx) * 3, (sy * img.width + sx) * 3 + 3), (y * width + x) * 3);
      }
    }
    return { width, height, data };
  }

  preprocess(image: RgbImage): PreprocessedImage {
    const { rescaleFactor, norm } = this.opts;
    const { width, height, data } = this.modelView(image);
    const plane = height * width;
    const out = new Float32Array(3 * plane);
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        let v = data[i * 3 + c]!;
        // numpy: uint8 -> float64 * factor -> float32, then (x - mean) / std in float32.
        if (rescaleFactor !== null) v = Math.fround(v * rescaleFactor);
        if (norm !== null) v = Math.fround(Math.fround(v - norm.mean[c]!) / norm.std[c]!);
        out[c * plane + i] = v;
      }
    }
    return { pixelValues: out, height, width };
  }
}

/** Resizing runs two passes whose buffers are out x out, out.width x in.height or in.width x
 * out.height pixels: an extreme aspect ratio would make them enormous. */
function checkResizeBuffers(img: RgbImage, width: number, height: number): void {
  const largest = Math.max(width * height, width * img.height, img.width * height);
  if (largest > MAX_IMAGE_PIXELS) {
    throw new CorematchingError(
      `an image of ${img.width}x${img.height} pixels resizes to ${width}x${height}, whose resampling buffers would hold ${largest} pixels, ` +
        `more than the limit of ${MAX_IMAGE_PIXELS}; use an image with a less extreme aspect ratio`,
    );
  }
}

/** transformers' get_resize_output_image_size(default_to_square=False) as [height, width]. */
function outputSize(img: RgbImage, target: ResizeTarget): [number, number] {
  if (!('shortestEdge' in target)) return [target.height, target.width];
  const size = target.shortestEdge;
  // Python's int(size * long / short) truncates the float quotient.
  if (img.width <= img.height) return [Math.trunc((size * img.height) / img.width), size];
  return [size, Math.trunc((size * img.width) / img.height)];
}
