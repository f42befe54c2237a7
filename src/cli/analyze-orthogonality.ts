/** `corematching analyze orthogonality`: how close a decoder's weight products are to a scaled identity. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { analyzeOrthogonality, type OrthogonalityReport } from '../analysis/orthogonality.js';
import { Checkpoint } from '../io/checkpoint.js';
import { loadLlavaConfig } from '../io/config.js';
import { CorematchingError } from '../io/errors.js';
import { heatMap, lineChart, svgToPng } from '../report/charts.js';
import { htmlReport, markdownTable, type ReportSection } from '../report/html-report.js';
import { MODEL_HELP, modelFolder } from './load-model.js';
import { nonNegativeInt, positiveInt } from './options.js';

interface OrthogonalityFlags {
  model?: string;
  layer?: number;
  threads?: number;
  json?: boolean;
  out?: string;
  report?: string;
}

const COLUMNS =
  'qk is Wq^T Wk (keys paired with their query heads), o is Wo Wo^T, down is Wdown Wdown^T. share = sum(diag(M)^2) / sum(M^2); ' +
  'scale = trace(M) / hidden, the s of M ~ s I closest in Frobenius norm; "random" is the share of the same product of Gaussian matrices of the same shapes.';

const f3 = (x: number) => x.toFixed(3);
const g3 = (x: number) => x.toPrecision(3);

function orthogonalityTable(r: OrthogonalityReport): { head: string[]; rows: string[][] } {
  const head = ['layer', 'qk share', 'qk random', 'qk scale', 'o share', 'o random', 'o scale', 'down share', 'down random', 'down scale'];
  const rows = r.layers.map((l) => [String(l.layer), ...[l.qk, l.o, l.down].flatMap((m) => [f3(m.diagonalShare), f3(m.randomDiagonalShare), g3(m.scale)])]);
  return { head, rows };
}

async function orthogonalityPictures(r: OrthogonalityReport): Promise<{ name: string; alt: string; png: Buffer }[]> {
  const series = (key: 'qk' | 'o' | 'down', label: string) => [
    { name: label, points: r.layers.map((l) => [l.layer, l[key].diagonalShare] as [number, number]) },
    { name: `${label}, Gaussian`, points: r.layers.map((l) => [l.layer, l[key].randomDiagonalShare] as [number, number]), dashed: true },
  ];
  const lines = lineChart({
    title: 'Diagonal share of weight products per layer',
    xLabel: 'decoder layer',
    yLabel: 'sum(diag(M)^2) / sum(M^2)',
    series: [...series('qk', 'Wq^T Wk'), ...series('o', 'Wo Wo^T'), ...series('down', 'Wdown Wdown^T')],
  });
  const { layer, size, values } = r.heatmap;
  const map = heatMap({ title: `Wq^T Wk of layer ${layer}, top-left ${size} x ${size}`, values, size });
  return [
    { name: 'layers', alt: 'diagonal share per layer', png: await svgToPng(lines) },
    { name: 'heatmap', alt: `M_qk heat map of layer ${layer}`, png: await svgToPng(map) },
  ];
}

/** Registers `analyze orthogonality` under `analyze`. */
export function addOrthogonalityCommand(analyze: Command): void {
  analyze
    .command('orthogonality')
    .description('Per decoder layer: how close Wq^T Wk, Wo Wo^T and Wdown Wdown^T are to a scaled identity, against Gaussian matrices.')
    .option('--model <dir|org/name>', MODEL_HELP)
    .option('--layer <l>', 'layer whose Wq^T Wk block is drawn (default: the middle one)', nonNegativeInt)
    .option('--threads <n>', 'ONNX Runtime threads', positiveInt)
    .option('--json', 'print the figures as JSON')
    .option('--out <prefix>', 'write PREFIX-layers.png and PREFIX-heatmap.png')
    .option('--report <file>', 'write a self-contained HTML report')
    .action(async (o: OrthogonalityFlags) => {
      const dir = await modelFolder(o.model);
      const config = loadLlavaConfig(dir);
      const layers = config.text.numHiddenLayers;
      if (o.layer !== undefined && o.layer >= layers) throw new CorematchingError(`--layer must be in 0 .. ${layers - 1} (the model has ${layers} decoder layers), got ${o.layer}`);
      const checkpoint = Checkpoint.open(dir);
      let report: OrthogonalityReport;
      try {
        report = await analyzeOrthogonality(checkpoint, config.text, {
          ...(o.layer !== undefined ? { heatmapLayer: o.layer } : {}),
          ...(o.threads !== undefined ? { threads: o.threads } : {}),
        });
      } finally {
        checkpoint.close();
      }
      const table = orthogonalityTable(report);
      if (o.json) {
        const layersJson = report.layers.map((l) => ({ layer: l.layer, qk: l.qk, o: l.o, down: l.down }));
        process.stdout.write(`${JSON.stringify({ hiddenSize: report.hiddenSize, layers: layersJson })}\n`);
      } else {
        process.stdout.write(`${markdownTable(table)}\n\n${COLUMNS}\n`);
      }
      if (o.out === undefined && o.report === undefined) return;
      const pictures = await orthogonalityPictures(report);
      if (o.out !== undefined) {
        fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
        for (const p of pictures) fs.writeFileSync(`${o.out}-${p.name}.png`, p.png);
      }
      if (o.report !== undefined) {
        const sections: ReportSection[] = [
          {
            heading: 'Diagonal share and best-fit scale per layer',
            text: [COLUMNS],
            table,
            pictures,
          },
        ];
        fs.writeFileSync(o.report, htmlReport(`Orthogonality of ${path.basename(path.resolve(dir))}`, `corematching ${process.argv.slice(2).join(' ')}`, sections));
      }
    });
}
