/** `corematching eval`: accuracy of a model on a question set, per policy and budget. */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { readEvalSet } from '../io/eval-set.js';
import { evaluate, type EvalReport } from '../pipeline/evaluate.js';
import { isPolicyName, POLICY_NAMES, type PolicyName } from '../sparsity/create-policy.js';
import type { PolicyOptions } from '../sparsity/options.js';
import { addModelFlags, loadWithProgress, type ModelFlags } from './load-model.js';
import { positiveInt } from './options.js';
import { addPolicyFlags, policyFromFlags, type PolicyFlags } from './policy-flags.js';

interface EvalOptions extends PolicyFlags, ModelFlags {
  data: string;
  limit?: number;
  json?: boolean;
  sweep?: boolean;
  policies: PolicyName[];
  budgets: SweepBudget[];
  out?: string;
}

const DEFAULT_SWEEP_POLICIES = 'dense,corematching,corematching-tokens,fastv,projection,random';
const DEFAULT_SWEEP_BUDGETS = 'knee,16,64,25%';

interface SweepBudget {
  label: string;
  budget: 'knee' | number;
}

/** --budgets: knee, integer counts and percentages, comma-separated. */
function budgetList(value: string): SweepBudget[] {
  return value.split(',').map((part) => {
    const label = part.trim();
    if (label === 'knee') return { label, budget: 'knee' as const };
    const percent = /^(\d+(\.\d+)?)%$/.exec(label);
    const budget = percent ? Number(percent[1]) / 100 : Number(label);
    const valid = percent ? budget > 0 && budget < 1 : Number.isSafeInteger(budget) && budget >= 1;
    if (!valid) throw new InvalidArgumentError(`--budgets must list knee, counts >= 1 or percentages in (0%, 100%), got "${label}"`);
    return { label, budget };
  });
}

function policyList(value: string): PolicyName[] {
  return value.split(',').map((part) => {
    const name = part.trim();
    if (!isPolicyName(name)) throw new InvalidArgumentError(`--policies must list policies of ${POLICY_NAMES.join(', ')}, got "${name}"`);
    return name;
  });
}

export const pct = (x: number) => `${(100 * x).toFixed(1)}`;

function summary(r: EvalReport): string {
  const types = Object.entries(r.perType)
    .map(([t, a]) => `${t} ${pct(a.accuracy)}%`)
    .join(', ');
  return `${r.policy}: accuracy ${pct(r.accuracy)}%, F1 ${pct(r.f1)} on ${r.questions} questions (${types}); kept ${r.meanKeptImageTokens.toFixed(1)}/${r.imageTokens} image tokens; prefill ${(r.meanFlops.prefill / 1e9).toFixed(2)} GFLOP (dense ${(r.denseFlops.prefill / 1e9).toFixed(2)}); ${(1000 * r.meanSeconds).toFixed(0)} ms/question, decode ${r.decodeTokensPerSecond.toFixed(1)} tokens/s`;
}

export interface SweepRow {
  label: string;
  budget: string;
  report: EvalReport | null;
}

/**
 * The sweep's markdown table: one row per policy and budget, one column per question type (exact
 * match, and token F1 after a slash for `f1Types`, whose answers have several words).
 */
export function sweepTable(rows: SweepRow[], types: string[], f1Types: string[] = []): string {
  const typeHead = types.map((t) => (f1Types.includes(t) ? `${t} (F1)` : t));
  const head = `| policy | budget | accuracy | F1 | ${typeHead.join(' | ')} | kept image tokens | prefill GFLOP | decode-step GFLOP | ms/question | decode tokens/s |`;
  const rule = `|${'---|'.repeat(9 + types.length)}`;
  const cell = (r: EvalReport, t: string) => {
    const a = r.perType[t];
    if (a === undefined) return '-';
    return f1Types.includes(t) ? `${pct(a.accuracy)} (${pct(a.f1)})` : pct(a.accuracy);
  };
  const body = rows.map(({ label, budget, report: r }) =>
    r === null
      ? `| ${label} | ${budget} | n/a (needs a count, no scores) |${' |'.repeat(6 + types.length)}`
      : `| ${label} | ${budget} | ${pct(r.accuracy)} | ${pct(r.f1)} | ${types.map((t) => cell(r, t)).join(' | ')} | ${r.meanKeptImageTokens.toFixed(1)} | ${(r.meanFlops.prefill / 1e9).toFixed(3)} | ${(r.meanFlops.decodeStep / 1e9).toFixed(4)} | ${(1000 * r.meanSeconds).toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} |`,
  );
  return [head, rule, ...body].join('\n');
}

export function evalCommand(program: Command): void {
  const command = addModelFlags(program.command('eval').description('Exact-match accuracy on a question set (a folder with questions.jsonl), per question type.'))
    .requiredOption('--data <dir>', 'folder with questions.jsonl and its images (see scripts/scenes.py)')
    .option('--limit <n>', 'only the first n questions', positiveInt)
    .option('--json', 'print the report as JSON')
    .option('--sweep', 'run every policy x budget (dense once) and print a markdown table (with --out, also write it and JSON)')
    .addOption(new Option('--policies <list>', 'with --sweep: the policies').argParser(policyList).default(policyList(DEFAULT_SWEEP_POLICIES), DEFAULT_SWEEP_POLICIES))
    .addOption(new Option('--budgets <list>', 'with --sweep: knee, counts and percentages').argParser(budgetList).default(budgetList(DEFAULT_SWEEP_BUDGETS), DEFAULT_SWEEP_BUDGETS))
    .option('--out <prefix>', 'with --sweep: write PREFIX.md and PREFIX.json (nothing is written without it)');
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
    const rows: SweepRow[] = [];
    const run = async (label: string, budgetLabel: string, p: PolicyName, options: Partial<PolicyOptions>) => {
      const report = await evaluate(vlm, items, p, options);
      process.stderr.write(`${label} ${budgetLabel}: ${summary(report)}\n`);
      rows.push({ label, budget: budgetLabel, report });
    };
    if (o.policies.includes('dense')) await run('dense', '-', 'dense', {});
    for (const p of o.policies.filter((name) => name !== 'dense')) {
      for (const { label, budget } of o.budgets) {
        if ((p === 'random' || p === 'pool') && budget === 'knee') {
          rows.push({ label: p, budget: label, report: null });
          continue;
        }
        await run(p, label, p, { ...base, budget });
      }
    }
    const types = [...new Set(items.map((i) => i.type))].sort();
    const f1Types = types.filter((t) => items.some((i) => i.type === t && i.answer.trim().includes(' ')));
    const commandLine = `corematching ${process.argv.slice(2).join(' ')}`;
    const markdown = `# Accuracy of every policy and budget\n\nMade by \`${commandLine}\` on ${items.length} questions (${new Date().toISOString().slice(0, 10)}). Accuracy in %, exact match${f1Types.length > 0 ? '; in brackets the token-level F1 of types whose answers have several words' : ''}; FLOPs are means per question; decode tokens/s counts the tokens after the first.\n\n${sweepTable(rows, types, f1Types)}\n`;
    if (o.out === undefined) {
      process.stdout.write(markdown);
      return;
    }
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(`${o.out}.md`, markdown);
    fs.writeFileSync(`${o.out}.json`, `${JSON.stringify({ command: commandLine, questions: items.length, rows }, null, 2)}\n`);
    process.stdout.write(`${markdown}\nwrote ${o.out}.md and ${o.out}.json\n`);
  });
}
