/**
 * Image decoding to 8-bit RGB, matching what transformers.image_utils.load_image hands the image
 * processor: PIL.Image.open, ImageOps.exif_transpose, then convert("RGB"). Checked byte for byte
 * against PIL for JPEG (incl. all 8 EXIF orientations), PNG (RGB, RGBA, grey, grey+alpha,
 * palette, 16-bit RGB), WebP and ICC-tagged files; known to differ for CMYK JPEGs (PIL's naive
 * CMYK->RGB) and 16-bit greyscale PNGs (PIL clips I;16 to 255 instead of scaling).
 */
import sharp from 'sharp';
import { CorematchingError } from './errors.js';
import { IMAGE_FILE_LIMIT, readRegularFileBytes } from './regular-file.js';

/** Largest image decoded (8192 x 8192), and largest buffer resizing may derive from one: its RGB
 * pixels take 192 MiB. */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

export interface RgbImage {
  width: number;
  height: number;
  /** RGB interleaved, row-major, width * height * 3 bytes. */
  data: Uint8Array;
}

/**
 * Decodes JPEG, PNG, WebP (and whatever else sharp reads) from a path or from bytes; `label`
 * names the image in errors (defaults to the path). The EXIF orientation is applied; alpha is
 * dropped without compositing and grey is replicated to three channels, as PIL's convert("RGB").
 */
export async function decodeImage(input: string | Uint8Array, label?: string, maxPixels = MAX_IMAGE_PIXELS): Promise<RgbImage> {
  const name = label ?? (typeof input === 'string' ? input : '<image bytes>');
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    bytes = await readRegularFileBytes(input, 'image file', IMAGE_FILE_LIMIT);
  } else {
    bytes = input;
  }
  if (bytes.length === 0) throw new CorematchingError('image file is empty', name);

  try {
    // PIL ignores embedded ICC profiles, so sharp must not colour-manage either; toColourspace
    // ('srgb') turns grey into RGB and 16-bit samples into 8-bit.
    const { data, info } = await sharp(bytes, { autoOrient: true, ignoreIcc: true, limitInputPixels: Math.min(maxPixels, MAX_IMAGE_PIXELS) })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (err) {
    const message = (err as Error).message;
    if (/pixel limit/.test(message)) throw new CorematchingError(`image has more than ${Math.min(maxPixels, MAX_IMAGE_PIXELS)} pixels, the limit`, name);
    throw new CorematchingError(`not a readable image (${message}); expected JPEG, PNG, WebP or another format sharp decodes`, name);
  }
}
