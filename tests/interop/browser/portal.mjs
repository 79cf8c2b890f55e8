// Uses the hdls customer portal in headless Chromium the way a customer would. Run by
// tests/it/portal_browser.rs.
//
//   node portal.mjs flow <portal-url> <email> <password> <subject> <body> <reply>
//       signs in, opens a new ticket, finds it in "My tickets", opens it and replies; prints
//       `portal:`, `listed:`, `ticket-url:` and `thread:` (JSON [{from, body}]).
//   node portal.mjs view <portal-url> <email> <password> <ticket-url>
//       signs in and opens a ticket's page; prints `status:`, `heading:` and `thread:`.
//
// Exits 0 on success; any failure exits non-zero with the reason on stderr. Element ids are
// those of src/web/portal/views.rs.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [mode, portalUrl, email, password, ...rest] = process.argv.slice(2);
if (!['flow', 'view'].includes(mode) || !password) {
  console.error('usage: node portal.mjs flow|view <portal-url> <email> <password> …');
  process.exit(64);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const watchdog = setTimeout(() => {
  console.error('portal.mjs: timed out');
  process.exit(3);
}, 120_000);

function fail(message) {
  throw new Error(message);
}

async function text(page, selector) {
  return (await page.locator(selector).first().innerText()).trim();
}

async function thread(page) {
  return page.locator('ol#thread li.entry').evaluateAll((items) =>
    items.map((li) => ({
      from: li.dataset.from,
      body: li.querySelector('.entry-body').innerText.trim(),
    })),
  );
}

/// Submits a form by clicking its button and waits for the page the redirect lands on.
async function submit(page, button) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click(button)]);
  if ((await page.locator('p#error').count()) > 0) {
    fail(`form refused on ${page.url()}: ${await text(page, 'p#error')}`);
  }
}

const userDataDir = await mkdtemp(join(tmpdir(), 'hdls-portal-'));
let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
    viewport: { width: 1000, height: 800 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);

  // Sign in.
  const first = await page.goto(portalUrl, { waitUntil: 'domcontentloaded' });
  if (!first || !first.ok()) fail(`GET ${portalUrl} answered ${first ? first.status() : 'nothing'}`);
  if ((await page.locator('form#portal-sign-in').count()) === 0) {
    fail(`no sign-in form at ${portalUrl}:\n${await page.content()}`);
  }
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('#sign-in-submit')]);
  if ((await page.locator('#my-tickets-link').count()) === 0) {
    const why = (await page.locator('p#error').count()) > 0 ? await text(page, 'p#error') : await page.content();
    fail(`sign-in failed: ${why}`);
  }
  console.log(`portal: ${await text(page, '#portal-name')}`);

  if (mode === 'flow') {
    const [subject, body, reply] = rest;
    await page.click('#new-ticket-link');
    await page.waitForSelector('form#new-ticket');
    await page.fill('#subject', subject);
    await page.fill('#body', body);
    await submit(page, '#new-ticket-submit');
    // Back to the list: the new ticket is there.
    await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('#my-tickets-link')]);
    const link = page.locator('table#tickets a.ticket-link', { hasText: subject });
    if ((await link.count()) !== 1) fail(`ticket "${subject}" not listed:\n${await page.content()}`);
    console.log(`listed: ${(await link.innerText()).trim()}`);
    await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), link.click()]);
    console.log(`ticket-url: ${page.url()}`);
    await page.fill('#reply-body', reply);
    await submit(page, '#reply-submit');
    console.log(`thread: ${JSON.stringify(await thread(page))}`);
  } else {
    const [ticketUrl] = rest;
    const response = await page.goto(ticketUrl, { waitUntil: 'domcontentloaded' });
    console.log(`status: ${response ? response.status() : 0}`);
    console.log(`heading: ${await text(page, 'h1')}`);
    console.log(`thread: ${JSON.stringify(await thread(page))}`);
  }
} catch (e) {
  console.error(`portal.mjs: ${e && e.stack ? e.stack : e}`);
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  clearTimeout(watchdog);
}
process.exit(exitCode);
