/**
 * The page `corematching serve` shows at `/`: pick or drop an image, ask, watch the answer stream,
 * switch policy and budget, and see which image tokens the policy kept, drawn over the image as
 * the model sees it (a centre square), with the timings. One file, no build step, nothing fetched
 * but this server's own API.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>corematching</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
  header { background: #1d3557; color: white; padding: 10px 20px; font-size: 18px; }
  header small { opacity: 0.75; margin-left: 10px; }
  main { display: grid; grid-template-columns: 360px 1fr; gap: 20px; padding: 20px; max-width: 1100px; margin: auto; }
  .panel { background: white; border-radius: 8px; padding: 16px; box-shadow: 0 1px 3px rgba(0,0,0,0.12); }
  #drop { border: 2px dashed #999; border-radius: 8px; height: 336px; display: flex; align-items: center; justify-content: center; cursor: pointer; position: relative; overflow: hidden; }
  #drop.over { border-color: #1d3557; background: #eef2f8; }
  #drop canvas { position: absolute; inset: 0; width: 100%; height: 100%; }
  #drop span { color: #777; text-align: center; padding: 10px; }
  label { display: block; margin: 10px 0 4px; font-size: 13px; color: #555; }
  input, select, button { font: inherit; padding: 6px 8px; box-sizing: border-box; }
  input[type=text], select { width: 100%; }
  .row { display: flex; gap: 8px; }
  .row > * { flex: 1; }
  button { margin-top: 14px; width: 100%; background: #1d3557; color: white; border: 0; border-radius: 6px; padding: 10px; cursor: pointer; }
  button:disabled { background: #888; }
  #answer { font-size: 20px; min-height: 32px; white-space: pre-wrap; }
  #error { color: #b00020; white-space: pre-wrap; }
  table { border-collapse: collapse; margin-top: 12px; font-size: 14px; }
  td { padding: 2px 12px 2px 0; }
  td:first-child { color: #666; }
  #legend { font-size: 13px; color: #555; margin-top: 6px; }
</style>
</head>
<body>
<header>corematching <small id="model"></small></header>
<main>
  <div class="panel">
    <div id="drop"><span>Drop an image here or click to pick one</span><canvas id="view" width="336" height="336" hidden></canvas></div>
    <input id="file" type="file" accept="image/*" hidden>
    <div id="legend" hidden>Bright patches: image tokens the policy kept; dimmed: dropped.</div>
  </div>
  <div class="panel">
    <form id="ask">
      <label for="question">Question</label>
      <input id="question" type="text" value="What color is the triangle?" autocomplete="off">
      <div class="row">
        <div><label for="policy">Policy</label>
          <select id="policy">
            <option>dense</option><option selected>corematching</option><option>corematching-tokens</option>
            <option>corematching-neurons</option><option>fastv</option><option>projection</option><option>random</option>
          </select></div>
        <div><label for="budget">Budget</label>
          <select id="budget"><option>knee</option><option>16</option><option selected>64</option><option>0.25</option><option>0.5</option></select></div>
        <div><label for="maxTokens">Max tokens</label><input id="maxTokens" type="number" min="1" value="64"></div>
      </div>
      <div id="keyRow" hidden><label for="apiKey">API key</label><input id="apiKey" type="password"></div>
      <button id="send" type="submit" disabled>Ask</button>
    </form>
    <h3>Answer</h3>
    <div id="answer"></div>
    <div id="error"></div>
    <table id="stats"></table>
  </div>
</main>
<script>
const $ = (id) => document.getElementById(id);
let image = null;        // { dataUrl, bitmap }
let lastReport = null;

fetch('/health').then((r) => r.json()).then((h) => { $('model').textContent = h.status === 'ok' ? '' : '(model ' + h.status + ')'; });
fetch('/v1/models').then((r) => r.ok ? r.json() : null).then((m) => { if (m) $('model').textContent = m.data[0].id; });

function pick(file) {
  if (!file || !file.type.startsWith('image/')) return;
  const reader = new FileReader();
  reader.onload = async () => {
    const bitmap = await createImageBitmap(file);
    image = { dataUrl: reader.result, bitmap };
    lastReport = null;
    draw();
    $('send').disabled = false;
  };
  reader.readAsDataURL(file);
}

/** The image as the model sees it (shortest edge fitted, centre square), with the kept-token map over it. */
function draw() {
  const canvas = $('view');
  const ctx = canvas.getContext('2d');
  canvas.hidden = false;
  document.querySelector('#drop span').hidden = true;
  const { bitmap } = image;
  const side = Math.min(bitmap.width, bitmap.height);
  ctx.drawImage(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side, 0, 0, canvas.width, canvas.height);
  $('legend').hidden = !lastReport;
  if (!lastReport) return;
  const grid = lastReport.image_grid;
  const cell = canvas.width / grid;
  const kept = new Set(lastReport.kept_image_token_indices);
  for (let i = 0; i < grid * grid; i++) {
    const x = (i % grid) * cell, y = Math.floor(i / grid) * cell;
    if (!kept.has(i)) { ctx.fillStyle = 'rgba(20, 20, 30, 0.72)'; ctx.fillRect(x, y, cell, cell); }
    else if (kept.size < grid * grid) { ctx.strokeStyle = 'rgba(255, 200, 0, 0.9)'; ctx.lineWidth = 1; ctx.strokeRect(x + 0.5, y + 0.5, cell - 1, cell - 1); }
  }
}

$('drop').addEventListener('click', () => $('file').click());
$('file').addEventListener('change', (e) => pick(e.target.files[0]));
$('drop').addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('over'); });
$('drop').addEventListener('dragleave', () => $('drop').classList.remove('over'));
$('drop').addEventListener('drop', (e) => { e.preventDefault(); $('drop').classList.remove('over'); pick(e.dataTransfer.files[0]); });

function showStats(report, usage) {
  const t = report.timings;
  const gflop = (n) => (n / 1e9).toFixed(2);
  const rows = [
    ['policy', report.policy],
    ['image tokens kept', report.kept_image_tokens + ' of ' + report.image_tokens],
    ['vision GFLOP', gflop(report.flops.vision)],
    ['prefill GFLOP', gflop(report.flops.prefill) + ' (dense ' + gflop(report.dense_flops.prefill) + ')'],
    ['vision', t.vision_ms.toFixed(0) + ' ms'],
    ['prefill', t.prefill_ms.toFixed(0) + ' ms'],
    ['first token', t.first_token_ms.toFixed(0) + ' ms'],
    ['decode', t.decode_tokens_per_second.toFixed(1) + ' tokens/s'],
  ];
  if (usage) rows.push(['tokens', usage.prompt_tokens + ' prompt, ' + usage.completion_tokens + ' new']);
  $('stats').innerHTML = '';
  for (const [k, v] of rows) {
    const tr = document.createElement('tr');
    for (const text of [k, v]) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); }
    $('stats').appendChild(tr);
  }
}

$('ask').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!image) return;
  $('send').disabled = true;
  $('answer').textContent = '';
  $('error').textContent = '';
  const budget = $('budget').value;
  const body = {
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image.dataUrl } }, { type: 'text', text: $('question').value }] }],
    max_tokens: Number($('maxTokens').value),
    stream: true,
    stream_options: { include_usage: true },
    corematching: $('policy').value === 'dense' ? { policy: 'dense' } : { policy: $('policy').value, budget: budget === 'knee' ? 'knee' : Number(budget) },
  };
  const headers = { 'Content-Type': 'application/json' };
  if ($('apiKey').value) headers.Authorization = 'Bearer ' + $('apiKey').value;
  try {
    const response = await fetch('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body) });
    if (!response.ok) {
      if (response.status === 401) $('keyRow').hidden = false;
      const err = await response.json().catch(() => ({ error: { message: response.statusText } }));
      throw new Error(response.status + ': ' + err.error.message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '', usage = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\\n\\n')) >= 0) {
        const event = buffer.slice(0, end).replace(/^data: /, '');
        buffer = buffer.slice(end + 2);
        if (event === '[DONE]') continue;
        const chunk = JSON.parse(event);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices[0] && chunk.choices[0].delta.content;
        if (delta) $('answer').textContent += delta;
        if (chunk.corematching) { lastReport = chunk.corematching; draw(); }
      }
    }
    if (lastReport) showStats(lastReport, usage);
    document.body.dataset.done = 'yes';
  } catch (err) {
    $('error').textContent = String(err.message || err);
  } finally {
    $('send').disabled = false;
  }
});
</script>
</body>
</html>
`;
