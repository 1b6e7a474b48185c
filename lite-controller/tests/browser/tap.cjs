// Opens a workload page of the controller's dashboard in headless Chromium
// (playwright-core, Debian's chromium), starts its live tap, waits for
// request rows, saves a screenshot and prints what it saw as one JSON line.
// Usage: node tap.cjs CONTROLLER_URL NAMESPACE NAME OUT_DIR   (NODE_PATH: node_modules)
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, ns, name, outDir] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.PIMESH_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url + "/dashboard#/w/" + ns + "/" + name);
    await page.click("#tap-toggle");
    try {
      await page.waitForFunction(() => document.querySelectorAll("#tap tbody tr").length >= 3,
        null, { timeout: 30000 });
    } catch (e) {
      const status = await page.$eval("#tap-status", (s) => s.textContent);
      throw new Error("no tap rows; status: " + status + "; errors: " + errors.join("; "));
    }
    const rows = await page.$$eval("#tap tbody tr",
      (rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
    const status = await page.$eval("#tap-status", (s) => s.textContent);
    await page.screenshot({ path: outDir + "/dashboard-tap.png", fullPage: true });
    await page.click("#tap-toggle");
    console.log(JSON.stringify({ rows, status, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
