// Headless Debian Chromium (/usr/bin/chromium, driven by playwright-core) on a phone-sized
// viewport: opens the portal through Apple's probe URL, reads the catalog, presses Continue,
// sees the probe turn into "Success", downloads a file and saves screenshots.
//
//   PORTAL_PORT=8080 OUT_DIR=out/test DOWNLOAD_DIR=/tmp/x node tests/browser/portal.js
//
// Prints one JSON line with what it saw; exits non-zero on any failure. Downloads no browser.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function main() {
  const port = process.env.PORTAL_PORT;
  const outDir = process.env.OUT_DIR;
  const dlDir = process.env.DOWNLOAD_DIR;
  if (!port || !outDir || !dlDir) throw new Error('PORTAL_PORT, OUT_DIR and DOWNLOAD_DIR are required');
  fs.mkdirSync(outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'popseed-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The phone's DNS (our responder) would send every name to the box: map the probe host.
      `--host-resolver-rules=MAP captive.apple.com:80 127.0.0.1:${port}`,
    ],
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
    acceptDownloads: true,
    timeout: 120000,
  });
  const result = {};
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    // bounds for a hung browser only: this is a loaded 2-core machine
    page.setDefaultTimeout(60000);
    const resp = await page.goto('http://captive.apple.com/hotspot-detect.html');
    result.landed = page.url();
    result.status = resp ? resp.status() : null;
    result.title = await page.title();
    result.releases = await page.locator('section.release h2').allInnerTexts();
    result.files = await page.locator('section.release .fname').allInnerTexts();
    result.hasQr = (await page.locator('.qr svg').count()) === 1;
    result.pageBytes = (await page.content()).length;
    await page.screenshot({ path: path.join(outDir, 'portal-phone.png'), fullPage: false });
    await page.screenshot({ path: path.join(outDir, 'portal-phone-full.png'), fullPage: true });

    await page.click('#continue');
    await page.waitForSelector('#connected');
    result.acknowledged = await page.locator('#connected').innerText();
    await page.screenshot({ path: path.join(outDir, 'portal-phone-connected.png'), fullPage: false });

    const probe = await ctx.newPage();
    const pr = await probe.goto('http://captive.apple.com/hotspot-detect.html');
    result.probeAfter = { status: pr ? pr.status() : null, body: await pr.text() };
    await probe.close();

    const link = page.locator('a.dl').first();
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    const saved = path.join(dlDir, download.suggestedFilename());
    await download.saveAs(saved);
    result.download = { name: download.suggestedFilename(), path: saved, href: await link.getAttribute('href') };
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
