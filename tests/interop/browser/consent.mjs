// Signs in and answers the consent page of an hdls authorization request in headless Chromium,
// the way a person would, and prints where the browser was sent back to. Run by tests/it/browser.rs.
//
//   node consent.mjs <authorize-url> <email> <password> <workspace-name> <products,comma,separated>
//                    <approve|deny> <screenshot.png|-> <redirect-uri-prefix>
//
// The redirect URI is a loopback port where nothing listens: navigation to it is intercepted and
// answered with a tiny page. Prints `redirect: <full url>` and exits 0; any failure exits non-zero
// with the reason on stderr. Element ids are the contract in docs/oauth-pages.md.

import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const USAGE =
  'usage: node consent.mjs <authorize-url> <email> <password> <workspace> <products> <approve|deny> <screenshot|-> <redirect-prefix>';

const [url, email, password, workspace, productList, decision, screenshot, redirectPrefix] =
  process.argv.slice(2);
if (!redirectPrefix || !['approve', 'deny'].includes(decision)) {
  console.error(USAGE);
  process.exit(64);
}
const products = productList.split(',').map((s) => s.trim()).filter(Boolean);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// Never hang a test run: the whole flow gets two minutes.
const watchdog = setTimeout(() => {
  console.error('consent.mjs: timed out');
  process.exit(3);
}, 120_000);

function fail(message) {
  throw new Error(message);
}

const userDataDir = await mkdtemp(join(tmpdir(), 'hdls-chromium-'));
let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1000, height: 800 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);
  // The browser's own complaints (e.g. a CSP form-action refusing the redirect) explain failures.
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));

  // Catch the hop back to the client, whether it comes as a redirect or a navigation.
  let resolveRedirect;
  const redirected = new Promise((resolve) => (resolveRedirect = resolve));
  await context.route(
    (u) => u.href.startsWith(redirectPrefix),
    async (route) => {
      resolveRedirect(route.request().url());
      await route.fulfill({
        status: 200,
        contentType: 'text/html; charset=utf-8',
        body: '<!doctype html><title>callback</title><p id="callback">received</p>',
      });
    },
  );

  const first = await page.goto(url, { waitUntil: 'domcontentloaded' });
  if (!first || !first.ok()) {
    fail(`GET ${url} answered ${first ? first.status() : 'nothing'}: ${first ? await first.text() : ''}`);
  }

  // Sign in (skipped if the authorization request went straight to consent).
  if ((await page.locator('form#consent').count()) === 0) {
    if ((await page.locator('form#sign-in').count()) === 0) {
      fail(`neither form#sign-in nor form#consent on ${page.url()}:\n${await page.content()}`);
    }
    await page.fill('#email', email);
    await page.fill('#password', password);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/oauth/sign-in'),
      page.click('#sign-in-submit'),
    ]);
    await page.waitForLoadState('domcontentloaded');
    if ((await page.locator('form#consent').count()) === 0) {
      const why =
        (await page.locator('p#error').count()) > 0
          ? (await page.locator('p#error').first().innerText()).trim()
          : (await page.locator('body').innerText().catch(() => '')).slice(0, 2000);
      fail(`sign-in did not lead to consent (POST /oauth/sign-in answered ${answer.status()}; now at ${page.url()}): ${why}`);
    }
  }

  const clientName = (await page.locator('#client-name').innerText()).trim();
  const redirectHost = (await page.locator('#redirect-host').innerText()).trim();
  if (!clientName) fail('#client-name is empty');
  if (!redirectHost) fail('#redirect-host is empty');
  console.log(`client-name: ${clientName}`);
  console.log(`redirect-host: ${redirectHost}`);
  if ((await page.locator('#signed-in-as').count()) > 0) {
    console.log(`signed-in-as: ${(await page.locator('#signed-in-as').innerText()).trim()}`);
  }

  // The workspace, by its visible name.
  const labels = (await page.locator('select#workspace option').allInnerTexts()).map((t) => t.trim());
  if (!labels.includes(workspace)) {
    fail(`no workspace option "${workspace}" in select#workspace (have: ${JSON.stringify(labels)})`);
  }
  await page.selectOption('select#workspace', { label: workspace });

  // Exactly the requested products.
  const boxes = page.locator('input[name=product]');
  for (let i = 0; i < (await boxes.count()); i++) await boxes.nth(i).uncheck();
  for (const slug of products) {
    const box = page.locator(`#product-${slug}`);
    if ((await box.count()) === 0) {
      const ids = await boxes.evaluateAll((els) => els.map((e) => e.id));
      fail(`no checkbox #product-${slug} (have: ${JSON.stringify(ids)})`);
    }
    await box.check();
  }

  if (screenshot && screenshot !== '-') {
    await mkdir(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
  }

  await page.click(decision === 'approve' ? '#approve' : '#deny', { noWaitAfter: true });
  const finalUrl = await Promise.race([
    redirected,
    new Promise((resolve) => setTimeout(() => resolve(null), 20_000)),
  ]);
  if (!finalUrl) {
    const text = await page.locator('body').innerText().catch(() => '');
    fail(
      `no redirect to ${redirectPrefix} after ${decision}; page is ${page.url()}:\n${text.slice(0, 2000)}` +
        `\nbrowser console:\n${consoleLines.join('\n') || '(nothing)'}`,
    );
  }
  console.log(`redirect: ${finalUrl}`);
} catch (e) {
  console.error(`consent.mjs: ${e && e.stack ? e.stack : e}`);
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  clearTimeout(watchdog);
}
process.exit(exitCode);
