// Headless Debian Chromium (/usr/bin/chromium, driven by playwright-core) opens the operator
// dashboard with `?token=`, checks the token was swapped for a cookie, reads the READY / NOT
// READY banner and the jobs, saves screenshots, then waits (without reloading) for the live
// refresh to turn the banner to READY.
//
//   DASHBOARD_URL=http://127.0.0.1:8080 TOKEN=... OUT_DIR=out/test node tests/browser/dashboard.js
//
// Prints "first view read" once it has read the first view (the test holds the fill until then),
// then one JSON line with what it saw; exits non-zero on any failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function main() {
  const base = process.env.DASHBOARD_URL;
  const token = process.env.TOKEN;
  const outDir = process.env.OUT_DIR;
  const waitReadyMs = Number(process.env.WAIT_READY_MS || 60000);
  if (!base || !token || !outDir) throw new Error('DASHBOARD_URL, TOKEN and OUT_DIR are required');
  fs.mkdirSync(outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'popseed-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    timeout: 120000,
  });
  const result = { external: [] };
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    // bounds for a hung browser only: this is a loaded 2-core machine
    page.setDefaultTimeout(60000);
    page.on('request', (r) => { if (!r.url().startsWith(base) && !r.url().startsWith('data:')) result.external.push(r.url()); });
    const login = await page.goto(base + '/');
    result.withoutToken = login ? login.status() : null;
    result.loginForm = (await page.locator('input[name=token]').count()) === 1;
    const resp = await page.goto(base + '/?token=' + encodeURIComponent(token));
    result.status = resp ? resp.status() : null;
    result.url = page.url();
    const cookies = await ctx.cookies(base);
    const c = cookies.find((k) => k.name === 'popseed_session');
    result.cookie = c ? { httpOnly: c.httpOnly, sameSite: c.sameSite, holdsToken: c.value.includes(token) } : null;
    result.title = await page.title();
    result.banner = await page.locator('#banner .word').innerText();
    result.reason = await page.locator('#reason').innerText();
    result.device = await page.locator('#device').innerText();
    result.venue = await page.locator('#venue').innerText();
    result.jobs = await page.locator('#jobs tr.job').allInnerTexts();
    result.sparklines = await page.locator('svg.spark').count();
    await page.screenshot({ path: path.join(outDir, 'dashboard-first.png'), fullPage: true });
    // tells the test it may let the fill go on (it holds the origin until this line)
    console.log('first view read');
    // the live refresh (inline script) turns the banner green without a reload
    await page.waitForSelector('#banner.ready', { timeout: waitReadyMs });
    result.bannerLater = await page.locator('#banner .word').innerText();
    result.reasonLater = await page.locator('#reason').innerText();
    result.sparkPoints = await page.locator('svg.spark polyline').first().getAttribute('points');
    await page.screenshot({ path: path.join(outDir, 'dashboard-ready.png'), fullPage: true });
    result.urlLater = page.url();
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
