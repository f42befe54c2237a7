/**
 * One self-contained HTML page per analysis (`--report FILE.html`): the command that made it, its
 * tables and its pictures inline (PNG data URLs), no scripts, fonts or links to fetch.
 */
import { escapeMarkup } from './markup.js';

export interface Table {
  head: string[];
  rows: (string | number)[][];
}

/** The same table for a terminal or a markdown file. */
export function markdownTable({ head, rows }: Table): string {
  return [`| ${head.join(' | ')} |`, `|${'---|'.repeat(head.length)}`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export interface ReportSection {
  heading: string;
  /** Plain paragraphs. */
  text?: string[];
  table?: Table;
  pictures?: { alt: string; png: Buffer }[];
}

export function htmlReport(title: string, command: string, sections: ReportSection[]): string {
  const body = sections
    .map((s) => {
      let html = `<h2>${escapeMarkup(s.heading)}</h2>`;
      for (const p of s.text ?? []) html += `<p>${escapeMarkup(p)}</p>`;
      if (s.table) {
        html += `<table><thead><tr>${s.table.head.map((h) => `<th>${escapeMarkup(h)}</th>`).join('')}</tr></thead><tbody>`;
        html += s.table.rows.map((r) => `<tr>${r.map((c) => `<td>${escapeMarkup(String(c))}</td>`).join('')}</tr>`).join('');
        html += '</tbody></table>';
      }
      for (const p of s.pictures ?? []) html += `<img alt="${escapeMarkup(p.alt)}" src="data:image/png;base64,${p.png.toString('base64')}">`;
      return `<section>${html}</section>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeMarkup(title)}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
code { background: #f3f3f3; padding: 2px 4px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
img { display: block; max-width: 100%; margin: 1em 0; }
</style></head>
<body><h1>${escapeMarkup(title)}</h1>
<p>Made by <code>${escapeMarkup(command)}</code> on ${new Date().toISOString().slice(0, 10)}.</p>
${body}
</body></html>
`;
}
