// Drives headless Debian chromium through the collector's web UI. Run by tests/web/run.sh,
// which starts the collector, feeds it the DMTF rackmount1 + PDU mockups and sets:
// GT_WEB_URL, GT_WEB_TOKEN, GT_CHROMIUM, GT_WEB_ARTIFACTS, GT_WEB_TMP, GT_AGENT_CMD.
import { chromium } from 'playwright-core';
import { execSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run tests/web/run.sh)`);
  return v;
};
const base = env('GT_WEB_URL');
const token = env('GT_WEB_TOKEN');
const artifacts = env('GT_WEB_ARTIFACTS');
const profile = mkdtempSync(join(env('GT_WEB_TMP'), 'chromium-profile-'));
let failures = 0;
const step = async (name, fn) => {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`not ok - ${name}\n  ${String(e && e.stack ? e.stack : e).split('\n').join('\n  ')}`);
  }
};

const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: env('GT_CHROMIUM'),
  headless: true,
  viewport: { width: 1100, height: 1200 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const page = ctx.pages()[0] ?? (await ctx.newPage());
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
// HTTP error statuses are asserted where they are expected (the refused login answers 401).
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
});
const rackUrl = `${base}/racks/WEBDC/WEB43`;
const serverSel = 'g.device[data-serial="437XR1138R2"]';

try {
  await step('an anonymous visit is sent to the login form', async () => {
    await page.goto(rackUrl);
    assert.match(new URL(page.url()).pathname, /^\/login$/);
    assert.equal(new URL(page.url()).searchParams.get('next'), '/racks/WEBDC/WEB43');
    const api = await ctx.request.get(`${base}/api/devices`);
    assert.equal(api.status(), 401);
  });

  await step('a wrong token is refused', async () => {
    await page.fill('input[name=token]', 'not-the-token');
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#login-error');
    assert.match(await page.textContent('#login-error'), /Wrong token/);
  });

  await step('logging in with the token lands on rack WEB43, cookie HttpOnly + SameSite=Strict', async () => {
    await page.fill('input[name=token]', token);
    await Promise.all([page.waitForURL(rackUrl), page.click('#login button[type=submit]')]);
    const cookie = (await ctx.cookies(base)).find((c) => c.name === 'gt_token');
    assert.ok(cookie, 'gt_token cookie set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(await page.evaluate(() => document.cookie.includes('gt_token')), false);
  });

  await step('rack WEB43 elevation draws the rackmount1 server at U12 with "344 W"', async () => {
    await page.waitForSelector(serverSel);
    const g = page.locator(serverSel);
    assert.equal(await g.getAttribute('data-u'), '12');
    assert.equal(await g.getAttribute('data-u-height'), '1');
    assert.match(await g.textContent(), /344 W/);
    assert.match(await g.textContent(), /U12 /);
    // Geometry: the device sits exactly over the U12 slot, not over its neighbours.
    const dev = await g.locator('rect.dev').boundingBox();
    const slot = await page.locator('g.slot[data-u="12"] rect').boundingBox();
    const cy = dev.y + dev.height / 2;
    assert.ok(cy > slot.y && cy < slot.y + slot.height, `device centre ${cy} inside U12 slot ${slot.y}..${slot.y + slot.height}`);
    assert.ok(dev.height <= slot.height, '1U tall');
    const label = await page.locator('g.slot[data-u="12"] text').boundingBox();
    assert.ok(Math.abs(label.y + label.height / 2 - cy) < slot.height / 2, 'U12 label level with the device');
    assert.match(await page.textContent('#rack-total'), /^344 W$/);
    const legend = await page.locator('ul.legend li').allTextContents();
    assert.ok(legend.some((t) => t.includes('300 – 500 W')), legend.join('|'));
    const fill = await g.locator('rect.dev').getAttribute('fill');
    assert.equal(fill, '#f9a825', '344 W is in the 300–500 W band');
  });

  await step('screenshot target/web-artifacts/rack-WEB43.png', async () => {
    await page.screenshot({ path: join(artifacts, 'rack-WEB43.png'), fullPage: true });
  });

  await step('a committed batch refreshes the open page over /events (SSE)', async () => {
    await page.waitForFunction(() => (document.getElementById('live-status') || {}).textContent === 'live', null, { timeout: 10000 });
    execSync(env('GT_AGENT_CMD'), { stdio: 'ignore' });
    await page.waitForSelector('body[data-refreshed]', { timeout: 20000 });
    assert.equal(await page.locator(serverSel).getAttribute('data-u'), '12');
  });

  await step('the device page shows identity, evidence, chosen location, power chart, CMDB state', async () => {
    await Promise.all([page.waitForURL(/\/devices\/serial%3A437XR1138R2$/), page.locator(`${serverSel}`).click()]);
    assert.match(await page.textContent('#identity'), /437XR1138R2/);
    assert.match(await page.textContent('#device-power'), /344 W/);
    const ev = await page.textContent('#evidence');
    assert.match(ev, /redfish placement/);
    assert.match(ev, /WEB43/);
    assert.match(await page.textContent('#chosen-location'), /rack WEB43 · U12/);
    assert.ok((await page.locator('#power-chart svg').count()) === 1, 'chart drawn');
    assert.match(await page.textContent('#power-chart figcaption'), /2 reading\(s\) in the last 24 h/);
    assert.match(await page.textContent('#cmdb-sync'), /no \[netbox\] section/);
    await page.screenshot({ path: join(artifacts, 'device-437XR1138R2.png'), fullPage: true });
  });

  await step('the PDU mockup (Redfish gives no rack; the site map pins it to WEB43) is placed there, its inlet lines listed, not counted twice', async () => {
    await page.goto(`${base}/racks/WEBDC/WEB43`);
    assert.match(await page.textContent('table.inlets'), /29347ZT536|ZAP4000/);
    assert.match(await page.textContent('#rack-total'), /^344 W$/);
    await page.goto(`${base}/devices/serial%3A29347ZT536`);
    assert.match(await page.textContent('#evidence'), /site map/);
    assert.match(await page.textContent('#chosen-location'), /rack WEB43/);
  });

  await step('the index lists sites, rooms and racks; hostile names stay text', async () => {
    await page.goto(`${base}/`);
    assert.match(await page.textContent('main'), /Site WEBDC/);
    assert.match(await page.textContent('main'), /Room 35/);
    assert.ok(await page.locator('a[href="/racks/WEBDC/WEB43"]').count() === 1);
    assert.match(await page.textContent('main'), /X<b>1<\/b>/);
    assert.match(await page.textContent('main'), /Room <img src=x onerror=window.__gtXss=1>/);
    assert.equal(await page.evaluate(() => window.__gtXss), undefined);
    await page.screenshot({ path: join(artifacts, 'index.png'), fullPage: true });
  });

  await step('exceptions: listed, escaped, a cross-site POST is refused, resolve works', async () => {
    await page.goto(`${base}/exceptions`);
    const row = page.locator('#exceptions tbody tr[data-kind="duplicate_serial"]');
    assert.equal(await row.count(), 1);
    assert.match(await row.textContent(), /<script>window.__gtXss=2<\/script>/);
    assert.equal(await page.evaluate(() => window.__gtXss), undefined);
    await page.screenshot({ path: join(artifacts, 'exceptions.png'), fullPage: true });
    const action = await row.locator('form.resolve').getAttribute('action');
    assert.equal(await row.locator('form.pin').count(), 0, 'only location kinds offer a pin');
    const forged = await ctx.request.post(`${base}${action}`, {
      headers: { Origin: 'http://evil.example', 'Content-Type': 'application/x-www-form-urlencoded' },
      data: 'by=mallory',
      maxRedirects: 0,
    });
    assert.equal(forged.status(), 403);
    assert.equal(await row.count(), 1);
    await row.locator('form.resolve input[name=by]').fill('web-test');
    await Promise.all([page.waitForURL(/\/exceptions\?resolved=\d+$/), row.getByRole('button', { name: 'Resolve', exact: true }).click()]);
    assert.match(await page.textContent('.notice'), /resolved/);
    assert.match(await page.textContent('main'), /No open exceptions/);
  });

  await step('integration health: one chart per KPI, reached from the header', async () => {
    await Promise.all([page.waitForURL(/\/health$/), page.click('header nav a[href="/health"]')]);
    assert.match(await page.textContent('main h1'), /Integration health/);
    assert.equal(await page.locator('figure.kpi').count(), 14);
    assert.ok((await page.locator('figure.kpi svg polyline').count()) >= 1, 'charts drawn');
    assert.match(await page.textContent('main'), /Devices seen: 2 /);
    await page.screenshot({ path: join(artifacts, 'health.png'), fullPage: true });
  });

  await step('no script errors on any page', async () => {
    assert.deepEqual(pageErrors, []);
  });
} finally {
  await ctx.close();
}
if (failures) {
  console.log(`web UI test: ${failures} check(s) failed`);
  process.exit(1);
}
