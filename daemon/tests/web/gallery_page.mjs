// The gallery page in a real headless Chromium (Debian's), against a running deepstackd
// that has an API key. Started by daemon/tests/web.rs, which passes:
//   BASE_URL     the daemon, e.g. http://127.0.0.1:5000
//   API_KEY      its API key
//   PHOTOS       directory of the test photos (target/testdata)
//   SCREENSHOTS  where each step's screenshot goes (target/web-screenshots)
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
// Exits non-zero, naming the step, when anything on the page is not as expected.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env('BASE_URL');
const apiKey = env('API_KEY');
const photos = env('PHOTOS');
const shots = env('SCREENSHOTS');
const photo = (name) => join(photos, name);
const TIMEOUT = 60_000;

mkdirSync(shots, { recursive: true });
// Playwright gives every launch a fresh, temporary --user-data-dir of its own.
const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

let step = 'start';
const saved = [];
async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  saved.push(path);
}

try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The 401 (before the key is given) and the 400 (the photo without a face) are answers
  // the page shows; anything else the browser reports is a fault.
  const expected = /Failed to load resource: the server responded with a status of 40[01]\b/;
  page.on('console', (m) => {
    if (m.type() === 'error' && !expected.test(m.text())) problems.push(`console: ${m.text()}`);
  });

  step = 'the page asks for the API key';
  await page.goto(base + '/');
  await page.locator('#key-form').waitFor({ state: 'visible' });
  await page.fill('#api-key', apiKey);
  await shot(page, '01-api-key');
  await page.click('#key-form button[type=submit]');
  await page.locator('#key-form').waitFor({ state: 'hidden' });

  step = 'register a person from two photos (and see a third skipped, with the reason)';
  await page.fill('#add-name', 'Barack');
  await page.setInputFiles('#add-files', [photo('obama.jpg'), photo('obama2.jpg'), photo('coffee.png')]);
  const results = page.locator('#add-results li');
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('#add-results li')];
    return items.length === 3 && items.every((li) => !li.textContent.endsWith('…'));
  });
  const texts = await results.allTextContents();
  if (!texts[0].includes('obama.jpg: added to Barack') || !texts[1].includes('obama2.jpg: added to Barack')) {
    throw new Error(`unexpected results: ${JSON.stringify(texts)}`);
  }
  if (!texts[2].includes('coffee.png: skipped, no face detected')) {
    throw new Error(`the photo without a face is not shown as skipped: ${JSON.stringify(texts)}`);
  }
  const person = (userid) => page.locator(`.person[data-userid="${userid}"]`);
  const loadedThumbs = (userid) => person(userid).locator('.thumb img[src^="blob:"]');
  await page.waitForFunction(() => document.querySelectorAll('.person[data-userid="Barack"] .thumb img[src^="blob:"]').length === 2);
  // The thumbnails really are images (decoded crops), not broken links.
  const widths = await loadedThumbs('Barack').evaluateAll((imgs) =>
    Promise.all(imgs.map((i) => i.decode().then(() => i.naturalWidth))));
  if (widths.join() !== '112,112') throw new Error(`thumbnails are ${widths}`);
  await shot(page, '02-two-thumbnails');

  step = 'remove one sample';
  await person('Barack').locator('.thumb .remove').first().click();
  await page.waitForFunction(() => document.querySelectorAll('.person[data-userid="Barack"] .thumb img[src^="blob:"]').length === 1);
  const meta = await person('Barack').locator('.meta').textContent();
  if (!meta.startsWith('1 photo')) throw new Error(`after removing: ${meta}`);
  await shot(page, '03-one-removed');

  step = 'rename the person';
  await person('Barack').locator('.new-name').fill('Barack Obama');
  await person('Barack').locator('.rename').click();
  await person('Barack Obama').waitFor();
  if (await person('Barack').count() !== 0) throw new Error('the old name is still shown');
  await loadedThumbs('Barack Obama').first().waitFor();
  await shot(page, '04-renamed');

  step = 'drag and drop a photo onto the person';
  // A real drop event carrying a File, as the browser makes it when a photo is dragged in.
  const dropped = readFileSync(photo('obama_1280x720.jpg')).toString('base64');
  await person('Barack Obama').evaluate((card, b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], 'dropped.jpg', { type: 'image/jpeg' }));
    card.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    card.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, dropped);
  await page.waitForFunction(() => document.querySelectorAll('.person[data-userid="Barack Obama"] .thumb img[src^="blob:"]').length === 2);
  await page.locator('#add-results li', { hasText: 'dropped.jpg: added to Barack Obama' }).waitFor();
  await shot(page, '05-dropped');

  step = '"try it" draws the name on the photo';
  await page.setInputFiles('#try-files', photo('obama3.jpg'));
  await page.locator('#try-canvas[data-drawn="1"]').waitFor();
  const found = await page.locator('#try-results li').allTextContents();
  if (found.length !== 1 || !/^Barack Obama (0\.\d\d|1\.00)$/.test(found[0])) {
    throw new Error(`try it found ${JSON.stringify(found)}`);
  }
  // The box and the label are drawn in the "known" green.
  const green = await page.evaluate(() => {
    const c = document.getElementById('try-canvas');
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] === 0x22 && data[i + 1] === 0xcc && data[i + 2] === 0x22) n++;
    return n;
  });
  if (green < 500) throw new Error(`only ${green} pixels of the box colour on the canvas`);
  await page.locator('#try').scrollIntoViewIfNeeded();
  await shot(page, '06-try-it');

  step = 'a stranger tried on the page shows under "Who came by", and is named there';
  await page.setInputFiles('#try-files', photo('biden.jpg'));
  await page.locator('#try-results li', { hasText: 'unknown' }).waitFor();
  const stranger = page.locator('.stranger').first();
  await stranger.locator('img.cover[src^="blob:"]').waitFor();
  const coverWidth = await stranger.locator('img.cover').evaluate((i) => i.decode().then(() => i.naturalWidth));
  if (coverWidth !== 112) throw new Error(`the stranger's cover is ${coverWidth} px wide`);
  const seen = await stranger.locator('.meta').textContent();
  if (!seen.startsWith('seen 1 time,')) throw new Error(`the stranger says ${JSON.stringify(seen)}`);
  await page.locator('#strangers-section').scrollIntoViewIfNeeded();
  await shot(page, '07-stranger');
  await stranger.locator('.this-is').fill('Joe Biden');
  await stranger.locator('.name-it').click();
  await page.locator('#strangers-message', { hasText: '1 photo added to Joe Biden' }).waitFor();
  await loadedThumbs('Joe Biden').first().waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.stranger').length === 0);
  await page.locator('#strangers-count', { hasText: '(0)' }).waitFor();
  await shot(page, '08-named');

  step = '"not" on a named face keeps it as a photo that is not that person';
  const named = page.locator('.named-face', { hasText: 'Barack Obama' }).first();
  await named.locator('img.cover[src^="blob:"]').waitFor();
  await named.locator('.not', { hasText: 'Not Barack Obama' }).click();
  await page.locator('#named-message', { hasText: 'not Barack Obama' }).waitFor();
  await page.locator('.person[data-userid="Barack Obama"] .thumb.negative img[src^="blob:"]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.named-face').length === 0);
  const obamaMeta = await person('Barack Obama').locator('.meta').textContent();
  if (!obamaMeta.startsWith('2 photos, 1 not Barack Obama')) throw new Error(`the person says ${JSON.stringify(obamaMeta)}`);
  await page.locator('#people-section').scrollIntoViewIfNeeded();
  await shot(page, '09-not');

  step = '"forget" drops a stranger group';
  await page.setInputFiles('#try-files', photo('astronaut.png'));
  await page.locator('#try-results li', { hasText: 'unknown' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.stranger').length === 1, null, { timeout: TIMEOUT });
  await page.locator('.stranger .forget').click();
  await page.waitForFunction(() => document.querySelectorAll('.stranger').length === 0);
  await page.locator('#strangers-count', { hasText: '(0)' }).waitFor();
  await shot(page, '10-forgotten');

  step = 'the key stays in this session only';
  const stored = await page.evaluate(() => ({ local: localStorage.length, cookies: document.cookie }));
  if (stored.local !== 0 || stored.cookies !== '') throw new Error(`key kept beyond the session: ${JSON.stringify(stored)}`);
  const other = await (await browser.newContext()).newPage();
  await other.goto(base + '/');
  await other.locator('#key-form').waitFor({ state: 'visible', timeout: TIMEOUT });
  await other.context().close();

  step = 'delete the people';
  page.on('dialog', (dialog) => dialog.accept());
  await person('Barack Obama').locator('.delete').click();
  await page.waitForFunction(() => document.querySelectorAll('.person').length === 1);
  await person('Joe Biden').locator('.delete').click();
  await page.waitForFunction(() => document.querySelectorAll('.person').length === 0);
  await page.locator('#status', { hasText: '0 people' }).waitFor();
  await shot(page, '11-deleted');

  if (problems.length) throw new Error(problems.join('\n'));
  console.log(JSON.stringify({ ok: true, screenshots: saved }));
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
