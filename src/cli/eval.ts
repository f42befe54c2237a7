/** `corematching eval`: accuracy of a model on a question set, per policy and budget. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { readEvalSet } from '../io/eval-set.js';
import { evaluate, type EvalReport } from '../pipeline/evaluate.js';
import type { PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { positiveInt } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface EvalOptions extends PolicyFlags, ModelFlags {
  data: string;
  limit?: number;
  json?: boolean;
  sweep?: boolean;
  out: string;
}

const SWEEP_POLICIES: PolicyName[] = ['corematching', 'corematching-tokens', 'fastv', 'projection', 'random'];
const SWEEP_BUDGETS: { label: string; budget: 'knee' | number }[] = [
  { label: 'knee', budget: 'knee' },
  { label: '16', budget: 16 },
  { label: '32', budget: 32 },
  { label: '64', budget: 64 },
  { label: '25%', budget: 0.25 },
  { label: '50%', budget: 0.5 },
];

const pct = (x: number) => `${(100 * x).toFixed(1)}`;

function summary(r: EvalReport): string {
  const types = Object.entries(r.perType)
    .map(([t, a]) => `${t} ${pct(a.accuracy)}%`)
    .join(', ');
  return `${r.policy}: accuracy ${pct(r.accuracy)}% on ${r.questions} questions (${types}); kept ${r.meanKeptImageTokens.toFixed(1)}/${r.imageTokens} image tokens; prefill ${(r.meanFlops.prefill / 1e9).toFixed(2)} GFLOP (dense ${(r.denseFlops.prefill / 1e9).toFixed(2)}); ${(1000 * r.meanSeconds).toFixed(0)} ms/question`;
}

/** The sweep's markdown table: one row per policy and budget, one column per question type. */
export function sweepTable(rows: { label: string; budget: string; report: EvalReport | null }[], types: string[]): string {
  const head = `| policy | budget | accuracy | ${types.join(' | ')} | kept image tokens | prefill GFLOP | decode-step GFLOP | ms/question |`;
  const rule = `|${'---|'.repeat(7 + types.length)}`;
  const body = rows.map(({ label, budget, report: r }) =>
    r === null
      ? `| ${label} | ${budget} | n/a (random needs a count) |${' |'.repeat(4 + types.length)}`
      : `| ${label} | ${budget} | ${pct(r.accuracy)} | ${types.map((t) => (r.perType[t] ? pct(r.perType[t]!.accuracy) : '-')).join(' | ')} | ${r.meanKeptImageTokens.toFixed(1)} | ${(r.meanFlops.prefill / 1e9).toFixed(3)} | ${(r.meanFlops.decodeStep / 1e9).toFixed(4)} | ${(1000 * r.meanSeconds).toFixed(0)} |`,
  );
  return [head, rule, ...body].join('\n');
}

export function evalCommand(program: Command): void {
  const command = addModelFlags(program.command('eval').description('Exact-match accuracy on a question set (a folder with questions.jsonl), per question type.'), 'checkpoint folder (default: the shipped model)')
    .requiredOption('--data <dir>', 'folder with questions.jsonl and its images (see scripts/scenes.py)')
    .option('--limit <n>', 'only the first n questions', positiveInt)
    .option('--json', 'print the report as JSON')
    .option('--sweep', 'run every policy x budget and write a markdown table and JSON')
    .option('--out <prefix>', 'with --sweep: output files without extension', 'docs/eval-sweep');
  addPolicyFlags(command).action(async (o: EvalOptions) => {
    const { policy, policyOptions } = policyFromFlags(o);
    let items = readEvalSet(o.data);
    if (o.limit !== undefined) items = items.slice(0, o.limit);
    const vlm = await loadWithProgress(o, o.json === true);
    if (!o.sweep) {
      const report = await evaluate(vlm, items, policy, policyOptions);
      process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${summary(report)}\n`);
      return;
    }
    // The sweep varies policy and budget; the other flags (token layer, rho, beta ...) apply to all.
    const base: Partial<PolicyOptions> = { ...policyOptions };
    delete base.budget;
    const rows: { label: string; budget: string; report: EvalReport | null }[] = [];
    const run = async (label: string, budgetLabel: string, p: PolicyName, options: Partial<PolicyOptions>) => {
      const report = await evaluate(vlm, items, p, options);
      process.stderr.write(`${label} ${budgetLabel}: ${summary(report)}\n`);
      rows.push({ label, budget: budgetLabel, report });
    };
    await run('dense', '-', 'dense', {});
    for (const p of SWEEP_POLICIES) {
      for (const { label, budget } of SWEEP_BUDGETS) {
        if (p === 'random' && budget === 'knee') {
          rows.push({ label: p, budget: label, report: null });
          continue;
        }
        await run(p, label, p, { ...base, budget });
      }
    }
    const types = [...new Set(items.map((i) => i.type))].sort();
    const commandLine = `corematching ${process.argv.slice(2).join(' ')}`;
    const markdown = `# Accuracy of every policy and budget\n\nMade by \`${commandLine}\` on ${items.length} questions (${new Date().toISOString().slice(0, 10)}). Accuracy in %, exact match; FLOPs are means per question.\n\n${sweepTable(rows, types)}\n`;
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(`${o.out}.md`, markdown);
    fs.writeFileSync(`${o.out}.json`, `${JSON.stringify({ command: commandLine, questions: items.length, rows }, null, 2)}\n`);
    process.stdout.write(`${markdown}\nwrote ${o.out}.md and ${o.out}.json\n`);
  });
}
