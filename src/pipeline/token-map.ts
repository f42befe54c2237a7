/**
 * Pictures of a token selection: the image as the model sees it with the dropped patches dimmed,
 * beside a heat map of the image-token scores with the kept tokens outlined, and a caption.
 */
import sharp from 'sharp';
import { escapeMarkup } from '../report/markup.js';
import type { RgbImage } from '../io/image.js';

export interface TokenMap {
  /** The model's view of the image (resized and cropped). */
  view: RgbImage;
  /** Patches per side and patch size in pixels. */
  grid: number;
  patch: number;
  /** Kept image tokens, indices into the grid (row-major). */
  kept: readonly number[];
  /** One score per image token (grid order), or null when the policy has none. */
  scores: ArrayLike<number> | null;
  caption: string;
}

/** A perceptually ordered dark-to-bright ramp (inferno-like), t in [0, 1]. */
function heatColour(t: number): [number, number, number] {
  const stops: [number, number, number][] = [
    [0, 0, 4],
    [87, 16, 110],
    [188, 55, 84],
    [249, 142, 9],
    [252, 255, 164],
  ];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const [a, b] = [stops[i]!, stops[i + 1]!];
  return [0, 1, 2].map((c) => Math.round(a[c]! + f * (b[c]! - a[c]!))) as [number, number, number];
}


export async function renderTokenMap(m: TokenMap): Promise<Buffer> {
  const { view, grid, patch } = m;
  const kept = new Set(m.kept);
  const left = Buffer.from(view.data);
  const right = Buffer.alloc(view.data.length, 255);
  let lo = Infinity;
  let hi = -Infinity;
  if (m.scores) for (let i = 0; i < grid * grid; i++) [lo, hi] = [Math.min(lo, m.scores[i]!), Math.max(hi, m.scores[i]!)];
  for (let y = 0; y < view.height; y++) {
    for (let x = 0; x < view.width; x++) {
      const gy = Math.floor(y / patch);
      const gx = Math.floor(x / patch);
      const p = (y * view.width + x) * 3;
      if (gy >= grid || gx >= grid) continue;
      const token = gy * grid + gx;
      if (!kept.has(token)) for (let c = 0; c < 3; c++) left[p + c] = Math.round(left[p + c]! * 0.25 + 40);
      const border = kept.has(token) && (y % patch === 0 || x % patch === 0 || y % patch === patch - 1 || x % patch === patch - 1);
      const colour: [number, number, number] = border ? [255, 255, 255] : m.scores ? heatColour(hi > lo ? (m.scores[token]! - lo) / (hi - lo) : 1) : kept.has(token) ? [250, 200, 60] : [30, 30, 60];
      right.set(colour, p);
    }
  }
  const scale = Math.max(1, Math.floor(384 / Math.max(view.width, view.height)));
  const w = view.width * scale;
  const h = view.height * scale;
  const panel = (data: Buffer) => sharp(data, { raw: { width: view.width, height: view.height, channels: 3 } }).resize(w, h, { kernel: 'nearest' }).png().toBuffer();
  const gap = 12;
  const captionHeight = 56;
  const caption = Buffer.from(
    `<svg width="${2 * w + 3 * gap}" height="${captionHeight}"><style>text{font-family:sans-serif;font-size:15px;fill:#222}</style>` +
      m.caption
        .split('\n')
        .slice(0, 2)
        .map((line, i) => `<text x="${gap}" y="${22 + 22 * i}">${escapeMarkup(line)}</text>`)
        .join('') +
      '</svg>',
  );
  return sharp({ create: { width: 2 * w + 3 * gap, height: h + 2 * gap + captionHeight, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite([
      { input: await panel(left), left: gap, top: gap },
      { input: await panel(right), left: 2 * gap + w, top: gap },
      { input: caption, left: 0, top: h + 2 * gap },
    ])
    .png()
    .toBuffer();
}
