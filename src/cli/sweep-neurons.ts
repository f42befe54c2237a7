/**
 * `corematching sweep-neurons`: the paper's Table 1 on a question set. For each beta, decode with
 * the core neurons (corematching-neurons: every image token kept, so only the FFN width changes)
 * and report the FFN neurons kept, exact-match accuracy, token F1 and decode speed, beside dense.
 */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { readEvalSet } from '../io/eval-set.js';
import { evaluate, type EvalReport } from '../pipeline/evaluate.js';
import { lineChart, svgToPng } from '../report/charts.js';
import { htmlReport, markdownTable, type Table } from '../report/html-report.js';
import { pct } from './eval.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { positiveInt } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface SweepNeuronFlags extends ModelFlags, PolicyFlags {
  data: string;
  betas: number[];
  limit?: number;
  json?: boolean;
  out?: string;
  report?: string;
}

function betaList(value: string): number[] {
  return value.split(',').map((part) => {
    const beta = Number(part.trim());
    if (!(beta > 0 && beta <= 1)) throw new InvalidArgumentError(`--betas must list numbers in (0, 1], got "${part.trim()}"`);
    return beta;
  });
}

/**
 * Why a table can show the same share for two betas: a core set never holds a neuron that is in no
 * prompt token's C_rho(x) (design doc section 2), so every beta above that share keeps one set.
 */
export function saturationNotes(rows: readonly { beta: number | null; report: EvalReport }[]): string[] {
  const sparse = rows.filter((r) => r.beta !== null);
  const notes: string[] = [];
  for (let i = 1; i < sparse.length; i++) {
    const [a, b] = [sparse[i - 1]!, sparse[i]!];
    if (pct(a.report.meanDecodeFfnShare) !== pct(b.report.meanDecodeFfnShare)) continue;
    notes.push(
      `beta ${a.beta} and ${b.beta} keep the same ${pct(b.report.meanDecodeFfnShare)}% of the FFN: a core set holds only neurons that are among ` +
        "some prompt token's top-rho positive activations, and there are fewer of those than beta x width.",
    );
  }
  return notes;
}

export function sweepNeuronsCommand(program: Command): void {
  const command = addModelFlags(program.command('sweep-neurons').description("Accuracy and decode speed against the share of FFN neurons kept (the paper's Table 1)."))
    .requiredOption('--data <dir>', 'folder with questions.jsonl and its images (see scripts/scenes.py)')
    .addOption(new Option('--betas <list>', 'betas to sweep, comma-separated').argParser(betaList).default(betaList('0.2,0.4,0.6,0.8,1.0'), '0.2,0.4,0.6,0.8,1.0'))
    .option('--limit <n>', 'only the first n questions', positiveInt)
    .option('--json', 'print the reports as JSON')
    .option('--out <prefix>', 'write PREFIX.md and PREFIX.png (the line chart)')
    .option('--report <file>', 'write a self-contained HTML report');
  addPolicyFlags(command, 'corematching-neurons').action(async (o: SweepNeuronFlags) => {
    // Other policy flags (rho, neuron layers ...) apply to every beta.
    const { policyOptions } = policyFromFlags(o);
    let items = readEvalSet(o.data);
    if (o.limit !== undefined) items = items.slice(0, o.limit);
    const vlm = await loadWithProgress(o, true);
    const rows: { beta: number | null; report: EvalReport }[] = [];
    try {
      rows.push({ beta: null, report: await evaluate(vlm, items, 'dense', {}) });
      for (const beta of o.betas) {
        rows.push({ beta, report: await evaluate(vlm, items, 'corematching-neurons', { ...policyOptions, beta }) });
        process.stderr.write(`beta ${beta}: accuracy ${pct(rows.at(-1)!.report.accuracy)}%\n`);
      }
    } finally {
      await vlm.release();
    }
    const table: Table = {
      head: ['beta', 'decode FFN neurons kept %', 'accuracy %', 'F1', 'decode tokens/s'],
      rows: rows.map(({ beta, report: r }) => [beta === null ? 'dense' : String(beta), pct(r.meanDecodeFfnShare), pct(r.accuracy), pct(r.f1), r.decodeTokensPerSecond.toFixed(1)]),
    };
    if (o.json) process.stdout.write(`${JSON.stringify({ questions: items.length, rows })}\n`);
    else {
      const legend = `(${items.length} questions; the share counts every decoder layer, and layers outside --neuron-layers decode with all their neurons)`;
      process.stdout.write(`${markdownTable(table)}\n${[legend, ...saturationNotes(rows)].join('\n')}\n`);
    }
    if (o.out === undefined && o.report === undefined) return;
    const sparse = rows.filter((r) => r.beta !== null);
    const dense = rows[0]!.report;
    const chart = lineChart({
      title: `Accuracy against FFN neurons kept at decode (${items.length} questions)`,
      xLabel: 'decode FFN neurons kept (%)',
      yLabel: '%',
      yRange: [0, 100],
      series: [
        { name: 'accuracy', points: sparse.map((r) => [100 * r.report.meanDecodeFfnShare, 100 * r.report.accuracy]) },
        { name: 'token F1', points: sparse.map((r) => [100 * r.report.meanDecodeFfnShare, 100 * r.report.f1]) },
        { name: 'dense accuracy', points: sparse.map((r) => [100 * r.report.meanDecodeFfnShare, 100 * dense.accuracy]), dashed: true },
        { name: 'dense token F1', points: sparse.map((r) => [100 * r.report.meanDecodeFfnShare, 100 * dense.f1]), dashed: true },
      ],
    });
    const png = await svgToPng(chart);
    const commandLine = `corematching ${process.argv.slice(2).join(' ')}`;
    if (o.out !== undefined) {
      fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
      fs.writeFileSync(`${o.out}.png`, png);
      fs.writeFileSync(`${o.out}.md`, `# Core neurons at decode: accuracy against FFN width\n\nMade by \`${commandLine}\` on ${items.length} questions (${new Date().toISOString().slice(0, 10)}).\n\n${markdownTable(table)}\n\n${saturationNotes(rows).join('\n\n')}\n\n![accuracy against neurons kept](${path.basename(o.out)}.png)\n`);
    }
    if (o.report !== undefined) {
      fs.writeFileSync(o.report, htmlReport('Core neurons at decode: accuracy against FFN width', commandLine, [{ heading: `${items.length} questions`, table, pictures: [{ alt: 'accuracy against neurons kept', png }] }]));
    }
  });
}
