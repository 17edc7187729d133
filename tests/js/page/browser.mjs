// A headless Chromium (Debian's /usr/bin/chromium, never a downloaded build) driven through
// playwright-core, for the Peer Explorer browser tests. The Rust test sends one JSON command per
// line on stdin and reads one JSON answer per line on stdout: {"id", "ok": true, "value"} or
// {"id", "ok": false, "error"}. The scenario lives in the Rust test; this script only acts.
//
// Commands: open {page, url, width, height, colorScheme, context} (`context` names an open page
// whose browser context, cookies and storage included, the new page shares); wait {page, js, timeout} (a JS
// expression, polled until truthy; answers its value); eval {page, js}; click / fill / select
// {page, selector, value}; drop {page, selector, files: [{name, type, hex}]} (a real drop
// event carrying File objects); viewport {page, width, height}; scheme {page, colorScheme};
// screenshot {page, path, fullPage}; download {page, selector} (clicks, waits for the download,
// answers {name, sha256}); errors {page}; close.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.FIRMA_CHROMIUM || '/usr/bin/chromium';
// The launch flags this machine needs (no GPU, no sandbox as root, nothing phoning home).
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

function say(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
const pages = new Map();

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}`);
  return p.page;
}

const commands = {
  async open({ page: name, url, width = 1280, height = 800, colorScheme = 'light', context: shared }) {
    const context = shared
      ? pages.get(shared)?.context
      : await browser.newContext({ viewport: { width, height }, colorScheme, acceptDownloads: true });
    if (!context) throw new Error(`no page named ${shared}`);
    const p = await context.newPage();
    const errors = [];
    p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    p.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    pages.set(name, { context, page: p, errors });
    await p.goto(url);
    return p.url();
  },
  // Polled from here with `evaluate` (CDP, outside the page's CSP): `waitForFunction` would
  // need 'unsafe-eval', which the page rightly forbids.
  async wait({ page: name, js, timeout = 30000 }) {
    const p = page(name);
    const end = Date.now() + timeout;
    let last;
    for (;;) {
      last = await p.evaluate(js);
      if (last) return last;
      if (Date.now() > end) throw new Error(`timed out after ${timeout} ms; last value ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  },
  async eval({ page: name, js }) {
    return page(name).evaluate(js);
  },
  async click({ page: name, selector }) {
    await page(name).click(selector, { timeout: 10000 });
    return true;
  },
  async fill({ page: name, selector, value }) {
    await page(name).fill(selector, value, { timeout: 10000 });
    return true;
  },
  async select({ page: name, selector, value }) {
    return page(name).selectOption(selector, value, { timeout: 10000 });
  },
  async drop({ page: name, selector, files }) {
    const p = page(name);
    // Build the DataTransfer inside the page: what a person dragging files from a desktop gives it.
    const dt = await p.evaluateHandle((list) => {
      const t = new DataTransfer();
      for (const f of list) {
        const bytes = new Uint8Array(f.hex.length / 2);
        for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(f.hex.substr(i * 2, 2), 16);
        t.items.add(new File([bytes], f.name, { type: f.type || '' }));
      }
      return t;
    }, files);
    for (const type of ['dragenter', 'dragover', 'drop']) {
      await p.dispatchEvent(selector, type, { dataTransfer: dt });
    }
    return true;
  },
  async download({ page: name, selector }) {
    const p = page(name);
    const [dl] = await Promise.all([p.waitForEvent('download', { timeout: 30000 }), p.click(selector, { timeout: 10000 })]);
    const failure = await dl.failure();
    if (failure) throw new Error(`the download failed: ${failure}`);
    const bytes = await readFile(await dl.path());
    return { name: dl.suggestedFilename(), sha256: createHash('sha256').update(bytes).digest('hex') };
  },
  async viewport({ page: name, width, height }) {
    await page(name).setViewportSize({ width, height });
    return true;
  },
  async scheme({ page: name, colorScheme }) {
    await page(name).emulateMedia({ colorScheme });
    return true;
  },
  async screenshot({ page: name, path, fullPage = true }) {
    await page(name).screenshot({ path, fullPage });
    return path;
  },
  async errors({ page: name }) {
    return pages.get(name)?.errors ?? [];
  },
  async close() {
    await browser.close();
    return true;
  },
};

say({ event: 'ready', version: browser.version() });

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    say({ ok: false, error: `not JSON: ${line}` });
    continue;
  }
  const fn = commands[msg.cmd];
  if (!fn) {
    say({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` });
    continue;
  }
  try {
    say({ id: msg.id, ok: true, value: (await fn(msg)) ?? null });
  } catch (e) {
    say({ id: msg.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
  if (msg.cmd === 'close') break;
}
// stdin closed (the test ended or died): never leave a browser behind.
await browser.close().catch(() => {});
process.exit(0);
