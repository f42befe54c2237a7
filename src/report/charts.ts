/**
 * Charts as SVG drawn here (the install has no plotting stack), rasterised with sharp when a PNG is
 * wanted: a line chart (one line per series), a stacked bar chart and a heat map.
 */
import sharp from 'sharp';
import { escapeMarkup } from './markup.js';

const WIDTH = 720;
const HEIGHT = 400;
const MARGIN = { left: 64, right: 210, top: 40, bottom: 52 };
/** Distinguishable on white and in greyscale (Okabe-Ito). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'];

const fmt = (x: number) => (Math.abs(x) >= 100 || Number.isInteger(x) ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(1) : x.toPrecision(2));

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

/** Round-number ticks covering [lo, hi]. */
function ticks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const step = [1, 2, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function frame(title: string, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">` +
    `<rect width="100%" height="100%" fill="white"/><text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="15">${escapeMarkup(title)}</text>${body}</svg>`;
}

interface Axes {
  x: (v: number) => number;
  y: (v: number) => number;
  svg: string;
}

function axes(xs: number[], ys: [number, number], xLabel: string, yLabel: string, xTickLabels?: string[]): Axes {
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const yt = ticks(ys[0], ys[1]);
  const [y0, y1] = [Math.min(ys[0], yt[0]!), Math.max(ys[1], yt[yt.length - 1]!)];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (v: number) => MARGIN.left + (x1 === x0 ? plotW / 2 : ((v - x0) / (x1 - x0)) * plotW);
  const y = (v: number) => MARGIN.top + plotH - ((v - y0) / (y1 - y0 || 1)) * plotH;
  const xt = xTickLabels ? xs : ticks(x0, x1, Math.min(10, Math.max(4, xs.length - 1)));
  let svg = `<line x1="${MARGIN.left}" y1="${MARGIN.top + plotH}" x2="${MARGIN.left + plotW}" y2="${MARGIN.top + plotH}" stroke="#333"/>`;
  svg += `<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + plotH}" stroke="#333"/>`;
  for (const t of yt) svg += `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${MARGIN.left - 6}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`;
  xt.forEach((t, i) => {
    svg += `<text x="${x(t)}" y="${MARGIN.top + plotH + 16}" text-anchor="middle">${escapeMarkup(xTickLabels ? xTickLabels[i]! : fmt(t))}</text>`;
  });
  svg += `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">${escapeMarkup(xLabel)}</text>`;
  svg += `<text transform="translate(16 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeMarkup(yLabel)}</text>`;
  return { x, y, svg };
}

function legend(entries: { name: string; color: string; dashed?: boolean; box?: boolean }[]): string {
  const left = WIDTH - MARGIN.right + 14;
  return entries
    .map((e, i) => {
      const top = MARGIN.top + 10 + i * 20;
      const mark = e.box
        ? `<rect x="${left}" y="${top - 8}" width="18" height="10" fill="${e.color}"/>`
        : `<line x1="${left}" x2="${left + 18}" y1="${top - 4}" y2="${top - 4}" stroke="${e.color}" stroke-width="2"${e.dashed ? ' stroke-dasharray="5 3"' : ''}/>`;
      return `${mark}<text x="${left + 24}" y="${top}">${escapeMarkup(e.name)}</text>`;
    })
    .join('');
}

export function lineChart(o: { title: string; xLabel: string; yLabel: string; series: Series[]; yRange?: [number, number] }): string {
  const xs = [...new Set(o.series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
  const values = o.series.flatMap((s) => s.points.map(([, y]) => y));
  const a = axes(xs, o.yRange ?? [Math.min(0, ...values), Math.max(...values)], o.xLabel, o.yLabel);
  const colors = o.series.map((_, i) => PALETTE[i % PALETTE.length]!);
  const lines = o.series
    .map((s, i) => {
      const d = s.points.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${a.x(x).toFixed(1)},${a.y(y).toFixed(1)}`).join(' ');
      const dots = s.points.length <= 12 ? s.points.map(([x, y]) => `<circle cx="${a.x(x)}" cy="${a.y(y)}" r="3" fill="${colors[i]}"/>`).join('') : '';
      return `<path d="${d}" fill="none" stroke="${colors[i]}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>${dots}`;
    })
    .join('');
  return frame(o.title, a.svg + lines + legend(o.series.map((s, i) => ({ name: s.name, color: colors[i]!, dashed: s.dashed }))));
}

/** One bar per category, stacked from `segments` (one value per category each). */
export function stackedBarChart(o: { title: string; yLabel: string; categories: string[]; segments: { name: string; values: number[] }[] }): string {
  const totals = o.categories.map((_, i) => o.segments.reduce((sum, s) => sum + s.values[i]!, 0));
  const xs = o.categories.map((_, i) => i);
  const a = axes(xs.length === 1 ? [-0.5, 0, 0.5] : [-0.5, ...xs, xs.length - 0.5], [0, Math.max(...totals)], '', o.yLabel, undefined);
  const slot = a.x(1) - a.x(0);
  const colors = o.segments.map((_, i) => PALETTE[i % PALETTE.length]!);
  let bars = '';
  o.categories.forEach((category, i) => {
    let base = 0;
    o.segments.forEach((s, j) => {
      const v = s.values[i]!;
      bars += `<rect x="${a.x(i) - slot * 0.3}" width="${slot * 0.6}" y="${a.y(base + v)}" height="${Math.max(0, a.y(base) - a.y(base + v))}" fill="${colors[j]}"/>`;
      base += v;
    });
    bars += `<text x="${a.x(i)}" y="${a.y(base) - 6}" text-anchor="middle">${fmt(base)}</text>`;
    bars += `<text x="${a.x(i)}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle">${escapeMarkup(category)}</text>`;
  });
  // The numeric x ticks of `axes` mean nothing here: draw over them with the background.
  const cover = `<rect x="${MARGIN.left + 1}" y="${HEIGHT - MARGIN.bottom + 2}" width="${WIDTH - MARGIN.left - MARGIN.right}" height="20" fill="white"/>`;
  return frame(o.title, a.svg + cover + bars + legend(o.segments.map((s, i) => ({ name: s.name, color: colors[i]!, box: true }))));
}

/** A square matrix as a diverging heat map (blue negative, white zero, red positive). */
export function heatMap(o: { title: string; values: Float32Array; size: number }): string {
  const cell = Math.floor((HEIGHT - 70) / o.size) || 1;
  const side = cell * o.size;
  const max = o.values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const colour = (v: number) => {
    const t = Math.max(-1, Math.min(1, v / max));
    const fade = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
  };
  const left = (WIDTH - side) / 2;
  let cells = '';
  for (let r = 0; r < o.size; r++) {
    for (let c = 0; c < o.size; c++) cells += `<rect x="${left + c * cell}" y="${40 + r * cell}" width="${cell}" height="${cell}" fill="${colour(o.values[r * o.size + c]!)}"/>`;
  }
  const scale = `<text x="${left + side + 12}" y="52">±${fmt(max)}</text>`;
  return frame(o.title, cells + `<rect x="${left}" y="40" width="${side}" height="${side}" fill="none" stroke="#333"/>` + scale);
}

export function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png().toBuffer();
}
