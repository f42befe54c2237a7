/**
 * Screenshots of the analysis reports (`--report FILE.html`) as a reader sees them, in Debian's
 * chromium: one PNG beside each HTML file.
 *
 *   npm run build && node dist/bench/screenshot-reports.js docs/testbed-*.html
 */
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
if (chromium === undefined) throw new Error('no chromium installed (apt-get install chromium)');
const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  for (const file of process.argv.slice(2)) {
    const page = await browser.newPage();
    await page.setViewport({ width: 1000, height: 800 });
    await page.goto(`file://${path.resolve(file)}`, { waitUntil: 'load' });
    const out = file.replace(/\.html$/, '-report.png') as `${string}.png`;
    await page.screenshot({ path: out, fullPage: true });
    console.log(`wrote ${out}`);
    await page.close();
  }
} finally {
  await browser.close();
}
