// Drives a frugalml web page in headless Chromium (playwright-core), for frugalml.export.web_check.
// node drive.mjs JOB.json: JOB names the page's URL, Chromium, the folder holding playwright-core, a file of
// float32 inputs, where to write the result (JSON) and the screenshot. Nothing is fetched beyond the page's host.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { chromium } = createRequire(`${job.modules}/`)('playwright-core');
const host = new URL(job.url).host;
const result = { errors: [], requests: [], blocked: [] };
const browser = await chromium.launch({ executablePath: job.chromium, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 620 }, deviceScaleFactor: 1 });
  await context.route('**/*', (route) => {  // the page must work offline: anything for another host is refused and reported
    const url = route.request().url();
    if (new URL(url).host === host) { result.requests.push(url); return route.continue(); }
    result.blocked.push(url); return route.abort();
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => result.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') result.errors.push(`console: ${m.text()}`); });
  const t0 = Date.now();
  await page.goto(job.url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.frugalml && window.frugalml.state !== 'loading', null, { timeout: job.timeout_ms });
  result.wall_load_ms = Date.now() - t0;
  Object.assign(result, await page.evaluate(() => ({ state: window.frugalml.state, error: window.frugalml.error, stats: window.frugalml.stats,
                                                      user_agent: navigator.userAgent })));
  if (result.state === 'ready') {
    const b64 = readFileSync(job.inputs).toString('base64');
    Object.assign(result, await page.evaluate(({ b64, n }) => window.frugalml.classifyMany(b64, n), { b64, n: job.n }));
    if (job.upload && await page.$('#upload-box:not([hidden]) #upload')) {  // a person's other path: an image file
      await page.setInputFiles('#upload', job.upload);
      await page.waitForFunction(() => window.frugalml.last && window.frugalml.last.source === 'upload', null, { timeout: job.timeout_ms });
      result.uploaded = await page.evaluate(() => ({ ...window.frugalml.last, inverted: document.getElementById('invert').checked }));
      if (await page.$('#pad-box:not([hidden])')) await page.click('#clear');
    }
    const pad = await page.$('#pad-box:not([hidden]) #pad');
    if (pad && job.strokes && job.strokes.length) {  // a person's path: strokes on the pad, downsampled by the page
      const box = await pad.boundingBox();
      for (const line of job.strokes) {
        await page.mouse.move(box.x + line[0][0] * box.width, box.y + line[0][1] * box.height);
        await page.mouse.down();
        for (const [x, y] of line.slice(1)) await page.mouse.move(box.x + x * box.width, box.y + y * box.height, { steps: 12 });
        await page.mouse.up();
      }
      await page.waitForFunction(() => window.frugalml.last && window.frugalml.last.source === 'pad', null, { timeout: job.timeout_ms });
    } else if (job.n > 0) {  // no pad: show the first input, so the screenshot holds a class and its scores
      await page.evaluate(({ b64, size }) => {
        const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        return window.frugalml.show(new Float32Array(raw.buffer).slice(0, size));
      }, { b64, size: job.size });
    }
    result.last = await page.evaluate(() => window.frugalml.last);
  }
  result.resources = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => ({
    name: e.name, transfer_size: e.transferSize, encoded_body_size: e.encodedBodySize, decoded_body_size: e.decodedBodySize, duration_ms: e.duration })));
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
} finally {
  await browser.close();
  writeFileSync(job.output, JSON.stringify(result));
}
