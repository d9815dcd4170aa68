// Headless Debian Chromium (playwright-core) plays the first video of the portal's catalog with
// the page's own <video> element (no script of the portal's: the test drives the element):
// records the time to the first frame (from play() and from the page's navigation start) and
// every `waiting` (stall) after playback started, plays until currentTime passes PLAY_SECONDS,
// then seeks to the middle, records how long until a frame from there is presented, and waits
// for playback to move on from there.
//
//   PORTAL_PORT=8080 PLAY_SECONDS=30 OUT_DIR=out/test node tests/browser/play.js
//
// Prints one JSON line with what it saw; exits non-zero on any failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function main() {
  const port = process.env.PORTAL_PORT;
  const outDir = process.env.OUT_DIR;
  const playSeconds = Number(process.env.PLAY_SECONDS || 30);
  if (!port || !outDir) throw new Error('PORTAL_PORT and OUT_DIR are required');
  fs.mkdirSync(outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'popseed-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
    viewport: { width: 390, height: 844 },
    isMobile: true,
    timeout: 120000,
  });
  const result = {};
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    // bounds for a hung browser only
    page.setDefaultTimeout(120000);
    await page.goto(`http://127.0.0.1:${port}/`);
    result.videos = await page.locator('video').count();
    if (result.videos < 1) throw new Error('no <video> on the catalog page');
    // The page has no script of its own (CSP: script-src none); playwright's evaluate runs in
    // an isolated world that the page's CSP does not govern.
    Object.assign(result, await page.locator('video').first().evaluate(async (v, playSeconds) => {
      const out = { waiting: 0, errors: [] };
      const t0 = performance.now();
      let started = false;
      v.addEventListener('waiting', () => { if (started) out.waiting += 1; });
      v.addEventListener('error', () => out.errors.push(v.error ? v.error.message || String(v.error.code) : 'error'));
      v.muted = true;
      const firstFrame = new Promise((resolve) => v.requestVideoFrameCallback(() => resolve()));
      await v.play();
      await firstFrame;
      started = true;
      out.firstFrameMs = performance.now() - t0;
      // performance.now() counts from the page's navigation start
      out.firstFrameSinceNavMs = performance.now();
      out.src = v.currentSrc;
      await new Promise((resolve) => {
        const check = () => (v.currentTime >= playSeconds ? resolve() : null);
        v.addEventListener('timeupdate', check);
        check();
      });
      out.playedTo = v.currentTime;
      out.playedMs = performance.now() - t0;
      out.duration = v.duration;
      out.stallsBeforeSeek = out.waiting;
      const target = v.duration / 2;
      const s0 = performance.now();
      const seeked = new Promise((resolve) => v.addEventListener('seeked', resolve, { once: true }));
      v.currentTime = target;
      await seeked;
      // the first frame presented from the new position
      await new Promise((resolve) => {
        const next = (_now, meta) => (meta.mediaTime >= target - 0.5 ? resolve() : v.requestVideoFrameCallback(next));
        v.requestVideoFrameCallback(next);
      });
      out.seekToPlayingMs = performance.now() - s0;
      out.seekTarget = target;
      // and playback moves on from there
      await new Promise((resolve) => {
        const check = () => (v.currentTime >= target + 1 ? resolve() : null);
        v.addEventListener('timeupdate', check);
        check();
      });
      return out;
    }, playSeconds));
    await page.screenshot({ path: path.join(outDir, 'portal-playing.png'), fullPage: false });
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
