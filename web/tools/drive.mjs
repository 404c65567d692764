// Drive the page in headless Chromium (Debian's /usr/bin/chromium through playwright-core) and print JSON.
//
//   node web/tools/drive.mjs job.json
//
// job.json: {"mode": "images" | "webcam" | "bench", "url": page URL, "chromium": path,
//   images: [png paths] (images, bench), model: a .tflite of model.json (optional), params: handtrack options,
//   video: a .y4m fed to Chromium's fake camera (webcam), frames: how many frames to wait for (webcam),
//   screenshot: a .png path (optional), iterations / warmup (bench), timeoutMs}
// The Python side (utils/evaluation/browser.py) writes the job and reads the answer.
import {readFileSync} from 'node:fs';
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const timeout = job.timeoutMs ?? 60000;

// A closed network: nothing but localhost, no background traffic, a fresh profile each run.
const args = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'];
if (job.video) {
  args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-video-capture=${job.video}`);
}

function dataUrl(path) {
  return `data:image/png;base64,${readFileSync(path).toString('base64')}`;
}

const profile = mkdtempSync(join(tmpdir(), 'handtrack-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: job.chromium || '/usr/bin/chromium', headless: true, args, chromiumSandbox: false,
  viewport: {width: 900, height: 900}, timeout,
});
const result = {userAgent: null, console: []};
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') result.console.push(message.text());
  });
  page.on('pageerror', (error) => result.console.push(`pageerror: ${error.message}`));
  const query = new URLSearchParams();
  if (job.model) query.set('model', job.model);
  if (job.mode === 'webcam') query.set('camera', '1');
  await page.goto(`${job.url}?${query}`);
  await page.waitForFunction(() => window.handtrackApp && (window.handtrackApp.model || window.handtrackApp.error));
  const state = await page.evaluate(() => ({error: window.handtrackApp.error, file: window.handtrackApp.model?.modelFile,
    inputSize: window.handtrackApp.model?.inputSize, userAgent: navigator.userAgent}));
  if (state.error) throw new Error(`the page could not load the model: ${state.error}`);
  Object.assign(result, state);
  if (job.params) await page.evaluate((params) => window.handtrackApp.model.setModelParameters(params), job.params);

  if (job.mode === 'images') {
    result.images = [];
    for (const path of job.images) {
      const predictions = await page.evaluate((url) => window.handtrackApp.detectUrl(url), dataUrl(path));
      result.images.push({path, predictions});
    }
  } else if (job.mode === 'webcam') {
    await page.waitForFunction((n) => window.handtrackApp.frames.length >= n, job.frames ?? 20);
    Object.assign(result, await page.evaluate(() => ({frames: window.handtrackApp.frames.slice(),
      fps: window.handtrackApp.fps, source: window.handtrackApp.source?.id,
      camera: window.handtrackApp.source?.srcObject?.getVideoTracks()[0]?.label,
      width: document.getElementById('view').width, height: document.getElementById('view').height})));
  } else if (job.mode === 'bench') {
    // model.detect alone on decoded frames, cycling through them: what a page's loop pays per frame.
    result.bench = await page.evaluate(async ({urls, iterations, warmup}) => {
      const images = await Promise.all(urls.map(async (url) => {
        const img = new Image();
        img.src = url;
        await img.decode();
        return img;
      }));
      const model = window.handtrackApp.model;
      for (let i = 0; i < warmup; i++) await model.detect(images[i % images.length]);
      const times = [];
      const start = performance.now();
      for (let i = 0; i < iterations; i++) {
        const t0 = performance.now();
        await model.detect(images[i % images.length]);
        times.push(performance.now() - t0);
      }
      const total = performance.now() - start;
      times.sort((a, b) => a - b);
      return {iterations, fps: iterations / (total / 1000), medianMs: times[times.length >> 1],
        p90Ms: times[Math.floor(times.length * 0.9)]};
    }, {urls: job.images.map(dataUrl), iterations: job.iterations ?? 100, warmup: job.warmup ?? 5});
  } else {
    throw new Error(`unknown mode ${job.mode}`);
  }
  if (job.screenshot) await page.screenshot({path: job.screenshot});
} catch (error) {
  result.error = error.message.split('\n')[0];
} finally {
  await context.close();
  rmSync(profile, {recursive: true, force: true});
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.error ? 1 : 0);
