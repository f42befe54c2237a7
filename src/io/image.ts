/**
 * Image decoding to 8-bit RGB, matching what transformers.image_utils.load_image hands the image
 * processor: PIL.Image.open, ImageOps.exif_transpose, then convert("RGB"). Checked byte for byte
 * against PIL for JPEG (incl. all 8 EXIF orientations), PNG (RGB, RGBA, grey, grey+alpha,
 * palette, 16-bit RGB), WebP and ICC-tagged files; known to differ for CMYK JPEGs (PIL's naive
 * CMYK->RGB) and 16-bit greyscale PNGs (PIL clips I;16 to 255 instead of scaling).
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { CorematchingError } from './errors.js';

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
export async function decodeImage(input: string | Uint8Array, label?: string): Promise<RgbImage> {
  const name = label ?? (typeof input === 'string' ? input : '<image bytes>');
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    try {
      bytes = await readFile(input);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CorematchingError(code === 'ENOENT' ? 'image file not found' : `cannot read image file (${code})`, name);
    }
  } else {
    bytes = input;
  }
  if (bytes.length === 0) throw new CorematchingError('image file is empty', name);

  try {
    // PIL ignores embedded ICC profiles, so sharp must not colour-manage either; toColourspace
    // ('srgb') turns grey into RGB and 16-bit samples into 8-bit.
    const { data, info } = await sharp(bytes, { autoOrient: true, ignoreIcc: true })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (err) {
    throw new CorematchingError(`not a readable image (${(err as Error).message}); expected JPEG, PNG, WebP or another format sharp decodes`, name);
  }
}
