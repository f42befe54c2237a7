/** `corematching analyze criteria`: token-selection criteria compared on a question set with targets. */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { keptShare, spearman, targetPatches } from '../analysis/criteria.js';
import { CorematchingError } from '../io/errors.js';
import { readEvalSet, readTargets } from '../io/eval-set.js';
import { decodeImage } from '../io/image.js';
import { lineChart, svgToPng } from '../report/charts.js';
import { htmlReport, markdownTable, type Table } from '../report/html-report.js';
import { createPolicy, type PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { positiveInt } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface CriteriaFlags extends ModelFlags, PolicyFlags {
  data: string;
  budgets: number[];
  limit?: number;
  json?: boolean;
  out?: string;
  report?: string;
}

/** The criteria compared: FastV's attention, the projection score, CoreMatching's count and this project's weighted match. */
const CRITERIA: { label: string; policy: PolicyName; options: Partial<PolicyOptions> }[] = [
  { label: 'attention (fastv)', policy: 'fastv', options: {} },
  { label: 'projection', policy: 'projection', options: {} },
  { label: 'core matching', policy: 'corematching-tokens', options: { match: 'active' } },
  { label: 'core matching, weighted', policy: 'corematching-tokens', options: { match: 'weighted' } },
];

function countList(value: string): number[] {
  return value.split(',').map((part) => {
    const n = Number(part.trim());
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--budgets must list token counts >= 1, got "${part.trim()}"`);
    return n;
  });
}

/** Maps pixel boxes of the original image into the model's square view (shortest edge resized, centre crop). */
function toView(boxes: [number, number, number, number][], width: number, height: number, side: number): number[][] {
  const scale = side / Math.min(width, height);
  const [dx, dy] = [(width * scale - side) / 2, (height * scale - side) / 2];
  return boxes.map(([x0, y0, x1, y1]) => [x0 * scale - dx, y0 * scale - dy, x1 * scale - dx, y1 * scale - dy]);
}

async function criteriaAction(o: CriteriaFlags): Promise<void> {
  const { policyOptions } = policyFromFlags(o);
  let items = readEvalSet(o.data);
  const allTargets = readTargets(o.data, items.length);
  let targets = allTargets;
  if (o.limit !== undefined) [items, targets] = [items.slice(0, o.limit), allTargets.slice(0, o.limit)];
  const vlm = await loadWithProgress(o, true);
  const v = vlm.config.vision;
  const grid = Math.floor(v.imageSize / v.patchSize);
  const n = CRITERIA.length;
  const correlation = Array.from({ length: n }, () => new Float64Array(n));
  const kept = CRITERIA.map(() => new Float64Array(o.budgets.length));
  let used = 0;
  try {
    for (const [q, item] of items.entries()) {
      const image = await decodeImage(item.image);
      const target = targetPatches(toView(targets[q]!, image.width, image.height, v.imageSize), grid, v.patchSize);
      if (target.length === 0) continue; // the question names an absent object
      used++;
      const scores: ArrayLike<number>[] = [];
      for (const [c, criterion] of CRITERIA.entries()) {
        for (const [b, budget] of o.budgets.entries()) {
          const policy = createPolicy(criterion.policy, { ...policyOptions, ...criterion.options, budget }, vlm.config.text.numHiddenLayers);
          const result = await vlm.generate({ image, prompt: item.question, maxNewTokens: 1, policy });
          kept[c]![b]! += keptShare(result.sparsity.keptImageTokens, target);
          if (b === 0) scores.push(policy.imageTokenScores!()!);
        }
      }
      for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) correlation[a]![b]! += spearman(scores[a]!, scores[b]!);
      if (process.stderr.isTTY) process.stderr.write(`\r${q + 1}/${items.length} questions`);
    }
    if (process.stderr.isTTY) process.stderr.write('\n');
  } finally {
    await vlm.release();
  }
  if (used === 0) throw new CorematchingError('no question names an object present in its image', o.data);
  const tokens = grid * grid;
  const correlationTable: Table = {
    head: ['Spearman rho', ...CRITERIA.map((c) => c.label)],
    rows: CRITERIA.map((c, a) => [c.label, ...CRITERIA.map((_, b) => (correlation[a]![b]! / used).toFixed(3))]),
  };
  const keptTable: Table = {
    head: ['criterion', ...o.budgets.map((k) => `target kept at ${k} tokens %`)],
    rows: [
      ...CRITERIA.map((c, i) => [c.label, ...o.budgets.map((_, b) => ((100 * kept[i]![b]!) / used).toFixed(1))]),
      ['random (expected)', ...o.budgets.map((k) => ((100 * k) / tokens).toFixed(1))],
    ],
  };
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ questions: used, criteria: CRITERIA.map((c) => c.label), budgets: o.budgets, spearman: correlation.map((row) => Array.from(row, (x) => x / used)), targetKept: kept.map((row) => Array.from(row, (x) => x / used)) })}\n`);
  } else {
    process.stdout.write(`${markdownTable(correlationTable)}\n\n${markdownTable(keptTable)}\n(${used} questions that name objects present in the image)\n`);
  }
  if (o.out === undefined && o.report === undefined) return;
  const chart = lineChart({
    title: `Share of the named objects' patches kept (${used} questions)`,
    xLabel: 'image tokens kept',
    yLabel: '% of target patches kept',
    yRange: [0, 100],
    series: [
      ...CRITERIA.map((c, i) => ({ name: c.label, points: o.budgets.map((k, b) => [k, (100 * kept[i]![b]!) / used] as [number, number]) })),
      { name: 'random', points: o.budgets.map((k) => [k, (100 * k) / tokens] as [number, number]), dashed: true },
    ],
  });
  const png = await svgToPng(chart);
  const commandLine = `corematching ${process.argv.slice(2).join(' ')}`;
  if (o.out !== undefined) {
    fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
    fs.writeFileSync(`${o.out}.png`, png);
    fs.writeFileSync(`${o.out}.md`, `# Token-selection criteria compared\n\nMade by \`${commandLine}\` on ${used} questions (${new Date().toISOString().slice(0, 10)}).\n\n${markdownTable(correlationTable)}\n\n${markdownTable(keptTable)}\n\n![target kept](${path.basename(o.out)}.png)\n`);
  }
  if (o.report !== undefined) {
    fs.writeFileSync(o.report, htmlReport('Token-selection criteria compared', commandLine, [
      { heading: 'Rank correlation of the token scores', text: [`Mean over ${used} questions of Spearman's rho between the criteria's image-token scores.`], table: correlationTable },
      { heading: "Share of the named objects' patches kept", text: ['A patch is a target when its centre lies in the box of an object the question names.'], table: keptTable, pictures: [{ alt: 'target kept against budget', png }] },
    ]));
  }
}

/** Registers `analyze criteria` under `analyze`. */
export function addCriteriaCommand(analyze: Command): void {
  const criteria = addModelFlags(analyze.command('criteria').description("Token-selection criteria compared: rank correlation of their scores and the share of the question's target patches each keeps."))
    .requiredOption('--data <dir>', 'folder with questions.jsonl, targets.jsonl and images (scripts/scenes.py)')
    .addOption(new Option('--budgets <list>', 'image-token counts to compare at').argParser(countList).default(countList('16,64'), '16,64'))
    .option('--limit <n>', 'only the first n questions', positiveInt)
    .option('--json', 'print the figures as JSON')
    .option('--out <prefix>', 'write PREFIX.md and PREFIX.png')
    .option('--report <file>', 'write a self-contained HTML report');
  addPolicyFlags(criteria, 'corematching-tokens').action(criteriaAction);
}
