/**
 * `corematching ablate`: the paper's Figure 9 on one image and question. Wall time of dense, token
 * sparsity only, neuron sparsity only and both, split into vision (preprocessing included),
 * prefill, the compact-FFN gather and decode; medians over --repeats rounds that alternate the four
 * configurations, after one warm-up round.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { PolicyName } from '../sparsity/create-policy.js';
import type { GenerateResult } from '../pipeline/vision-language-model.js';
import { stackedBarChart, svgToPng } from '../report/charts.js';
import { htmlReport, markdownTable, type Table } from '../report/html-report.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { positiveInt } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface AblateFlags extends ModelFlags, PolicyFlags {
  image: string;
  prompt: string;
  tokens: number;
  repeats: number;
  json?: boolean;
  out?: string;
  report?: string;
}

const CONFIGS: { label: string; policy: PolicyName }[] = [
  { label: 'dense', policy: 'dense' },
  { label: 'tokens only', policy: 'corematching-tokens' },
  { label: 'neurons only', policy: 'corematching-neurons' },
  { label: 'both', policy: 'corematching' },
];
const PHASES = ['vision', 'prefill', 'compact FFN', 'decode'] as const;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function phases(r: GenerateResult): number[] {
  const s = r.stats;
  return [s.preprocessMs + s.visionMs, s.prefillMs, s.compactFfnMs, s.decodeMs];
}

export function ablateCommand(program: Command): void {
  const command = addModelFlags(program.command('ablate').description('Wall time of dense, tokens only, neurons only and both (the paper\'s Figure 9), per phase.'))
    .requiredOption('--image <file>', 'image file')
    .requiredOption('--prompt <text>', 'question about the image')
    .option('--tokens <n>', 'new tokens decoded per run (end-of-sequence ignored)', positiveInt, 32)
    .option('--repeats <n>', 'timed rounds, each running the four configurations once', positiveInt, 5)
    .option('--json', 'print the medians as JSON')
    .option('--out <prefix>', 'write PREFIX.png, the stacked bar chart')
    .option('--report <file>', 'write a self-contained HTML report');
  addPolicyFlags(command, 'corematching').action(async (o: AblateFlags) => {
    // The policy flags (budget, rho, beta, layers ...) configure the three sparse runs.
    const { policyOptions } = policyFromFlags(o);
    const vlm = await loadWithProgress(o, true);
    const times = CONFIGS.map(() => PHASES.map(() => [] as number[]));
    const kept: number[] = [];
    try {
      for (let round = -1; round < o.repeats; round++) {
        for (const [i, c] of CONFIGS.entries()) {
          const r = await vlm.generate({ image: o.image, prompt: o.prompt, maxNewTokens: o.tokens, ignoreEos: true, policy: c.policy, policyOptions: c.policy === 'dense' ? {} : policyOptions });
          kept[i] = r.sparsity.keptImageTokens.length;
          if (round >= 0) phases(r).forEach((ms, p) => times[i]![p]!.push(ms));
        }
      }
    } finally {
      await vlm.release();
    }
    const medians = times.map((perPhase) => perPhase.map(median));
    const total = (i: number) => medians[i]!.reduce((a, b) => a + b, 0);
    const table: Table = {
      head: ['configuration', 'kept image tokens', ...PHASES.map((p) => `${p} ms`), 'total ms', 'speedup'],
      rows: CONFIGS.map((c, i) => [c.label, kept[i]!, ...medians[i]!.map((ms) => ms.toFixed(1)), total(i).toFixed(1), `${(total(0) / total(i)).toFixed(2)}x`]),
    };
    if (o.json) {
      const rows = CONFIGS.map((c, i) => ({ configuration: c.label, policy: c.policy, keptImageTokens: kept[i], ...Object.fromEntries(PHASES.map((p, j) => [p, medians[i]![j]])), total: total(i) }));
      process.stdout.write(`${JSON.stringify({ repeats: o.repeats, tokens: o.tokens, rows })}\n`);
    } else {
      process.stdout.write(`${markdownTable(table)}\n(medians of ${o.repeats} rounds, ${o.tokens} new tokens)\n`);
    }
    if (o.out === undefined && o.report === undefined) return;
    const chart = stackedBarChart({
      title: `Wall time per phase, ${o.tokens} new tokens (medians of ${o.repeats})`,
      yLabel: 'ms',
      categories: CONFIGS.map((c) => c.label),
      segments: PHASES.map((p, j) => ({ name: p, values: medians.map((m) => m[j]!) })),
    });
    const png = await svgToPng(chart);
    if (o.out !== undefined) {
      fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
      fs.writeFileSync(`${o.out}.png`, png);
    }
    if (o.report !== undefined) {
      fs.writeFileSync(o.report, htmlReport('Token and neuron sparsity, alone and together', `corematching ${process.argv.slice(2).join(' ')}`, [
        { heading: 'Wall time per phase', text: [`Image ${o.image}, prompt "${o.prompt}".`], table, pictures: [{ alt: 'stacked bars of wall time per phase', png }] },
      ]));
    }
  });
}
