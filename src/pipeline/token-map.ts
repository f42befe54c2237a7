/**
 * Pictures of a token selection: the image as the model sees it with the dropped patches dimmed,
 * beside a heat map of the image-token scores with the kept tokens outlined, a legend with the
 * colour bar, and a caption.
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
  /** What the scores are, for the colour bar (default "token score"). */
  scoreLabel?: string;
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


/**
 * Each score's rank in [0, 1] (ties share their mean rank): colours by rank read the same for
 * every policy, where raw values would not (FastV's attention puts nearly all its mass on a few
 * tokens and would paint the rest black).
 */
export function scoreRanks(scores: ArrayLike<number>, n: number): Float64Array {
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  const ranks = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]!] === scores[order[i]!]) j++;
    for (let k = i; k <= j; k++) ranks[order[k]!] = n > 1 ? (i + j) / 2 / (n - 1) : 1;
    i = j + 1;
  }
  return ranks;
}

const KEPT: [number, number, number] = [250, 200, 60];
const DROPPED: [number, number, number] = [30, 30, 60];

/** A dropped patch, the same way in both panels and for every policy: a quarter of its colour over dark grey. */
const dim = (v: number): number => Math.round(v * 0.25 + 40);

function legendSvg(width: number, m: TokenMap, gap: number): string {
  const text = (x: number, y: number, s: string, anchor = 'start') => `<text x="${x}" y="${y}" text-anchor="${anchor}">${escapeMarkup(s)}</text>`;
  const swatch = (x: number, fill: string, stroke = 'none') => `<rect x="${x}" y="8" width="16" height="16" fill="${fill}" stroke="${stroke}" stroke-width="2"/>`;
  const parts = [swatch(gap, `rgb(${dim(200)},${dim(200)},${dim(200)})`), text(gap + 22, 21, 'dimmed: dropped image tokens')];
  const x0 = gap + 250;
  if (m.scores) {
    const bar = Array.from({ length: 5 }, (_, i) => `<stop offset="${i / 4}" stop-color="rgb(${heatColour(i / 4).join(',')})"/>`).join('');
    const barWidth = Math.max(120, width - x0 - gap - 170);
    parts.push(
      swatch(x0, 'none', 'white'),
      `<rect x="${x0}" y="8" width="16" height="16" fill="none" stroke="#222" stroke-width="1"/>`,
      text(x0 + 22, 21, 'outlined: kept'),
      `<defs><linearGradient id="ramp">${bar}</linearGradient></defs>`,
      `<rect x="${x0 + 130}" y="8" width="${barWidth}" height="16" fill="url(#ramp)"/>`,
      text(x0 + 130, 40, 'lowest'),
      text(x0 + 130 + barWidth, 40, 'highest', 'end'),
      text(x0 + 130 + barWidth / 2, 40, `${m.scoreLabel ?? 'token score'}, by rank`, 'middle'),
    );
  } else {
    parts.push(swatch(x0, `rgb(${KEPT.join(',')})`), text(x0 + 22, 21, 'kept'), swatch(x0 + 70, `rgb(${DROPPED.join(',')})`), text(x0 + 92, 21, 'dropped (the policy has no scores)'));
  }
  return `<svg width="${width}" height="48"><style>text{font-family:sans-serif;font-size:13px;fill:#222}</style>${parts.join('')}</svg>`;
}

export async function renderTokenMap(m: TokenMap): Promise<Buffer> {
  const { view, grid, patch } = m;
  const kept = new Set(m.kept);
  const left = Buffer.from(view.data);
  const right = Buffer.alloc(view.data.length, 255);
  const ranks = m.scores ? scoreRanks(m.scores, grid * grid) : null;
  for (let y = 0; y < view.height; y++) {
    for (let x = 0; x < view.width; x++) {
      const gy = Math.floor(y / patch);
      const gx = Math.floor(x / patch);
      const p = (y * view.width + x) * 3;
      if (gy >= grid || gx >= grid) continue;
      const token = gy * grid + gx;
      const isKept = kept.has(token);
      if (!isKept) for (let c = 0; c < 3; c++) left[p + c] = dim(left[p + c]!);
      const border = isKept && (y % patch === 0 || x % patch === 0 || y % patch === patch - 1 || x % patch === patch - 1);
      if (border) right.set([255, 255, 255], p);
      else if (ranks) right.set(isKept ? heatColour(ranks[token]!) : heatColour(ranks[token]!).map(dim), p);
      else right.set(isKept ? KEPT : DROPPED, p);
    }
  }
  const scale = Math.max(1, Math.floor(384 / Math.max(view.width, view.height)));
  const w = view.width * scale;
  const h = view.height * scale;
  const panel = (data: Buffer) => sharp(data, { raw: { width: view.width, height: view.height, channels: 3 } }).resize(w, h, { kernel: 'nearest' }).png().toBuffer();
  const gap = 12;
  const width = 2 * w + 3 * gap;
  const legendHeight = 48;
  const captionHeight = 56;
  const caption = Buffer.from(
    `<svg width="${width}" height="${captionHeight}"><style>text{font-family:sans-serif;font-size:15px;fill:#222}</style>` +
      m.caption
        .split('\n')
        .slice(0, 2)
        .map((line, i) => `<text x="${gap}" y="${22 + 22 * i}">${escapeMarkup(line)}</text>`)
        .join('') +
      '</svg>',
  );
  return sharp({ create: { width, height: h + 2 * gap + legendHeight + captionHeight, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite([
      { input: await panel(left), left: gap, top: gap },
      { input: await panel(right), left: 2 * gap + w, top: gap },
      { input: Buffer.from(legendSvg(width, m, gap)), left: 0, top: h + 2 * gap },
      { input: caption, left: 0, top: h + 2 * gap + legendHeight },
    ])
    .png()
    .toBuffer();
}
