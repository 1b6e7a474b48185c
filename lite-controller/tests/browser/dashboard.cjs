// Loads the controller's dashboard in headless Chromium (playwright-core,
// Debian's chromium): first with the API held (what shows at load) and then
// answering empty (the empty state); then waits for workloads with traffic,
// reads the overview table and the topology graph, opens a workload page
// with its charts, legend and authorization card, measures its edges table at 1400×900, saves
// screenshots, and prints what it saw as one JSON line.
// Usage: node dashboard.cjs CONTROLLER_URL OUT_DIR   (NODE_PATH: node_modules)
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, outDir] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.PIMESH_CHROMIUM || "/usr/bin/chromium",
    // Root in CI containers: Chromium's sandbox needs user namespaces.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    // At load: the API held, so nothing has come back yet.
    const held = [];
    let hold = true;
    const empty = { window_seconds: 60, rows: [], step_seconds: 10, points: [] };
    await page.route("**/v1/**", (r) => (hold ? held.push(r) : r.fulfill({ json: empty })));
    await page.goto(url + "/dashboard");
    // Each table's rows (class, text, rendered height), the SVGs' texts.
    const tables = () => {
      const rowsOf = (sel) => [...document.querySelectorAll(sel)].map((r) => ({
        cls: r.className, text: r.textContent, height: r.getBoundingClientRect().height,
      }));
      return {
        workloads: rowsOf("#workloads tbody tr"),
        wedges: rowsOf("#wedges tbody tr"),
        wauthz: rowsOf("#wauthz tbody tr"),
        topology: document.querySelector("#topology").textContent.trim(),
        charts: [...document.querySelectorAll(".charts svg")].map((s) => s.textContent),
        loaded: document.body.dataset.loaded || null,
      };
    };
    const atLoad = { ...(await page.evaluate(tables)), held: held.length };
    await page.screenshot({ path: outDir + "/dashboard-loading.png", fullPage: true });
    // Then empty answers: the empty state.
    hold = false;
    for (const r of held.splice(0)) await r.fulfill({ json: empty });
    await page.waitForFunction(() => document.body.dataset.loaded === "true");
    const emptyState = await page.evaluate(tables);
    await page.screenshot({ path: outDir + "/dashboard-empty.png", fullPage: true });
    await page.unroute("**/v1/**");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#workloads tbody tr:not(.empty)")];
      const busy = rows.filter((r) => /^[0-9.]*[1-9][0-9.]*rps$/.test(r.children[4].textContent));
      return rows.length >= 3 && busy.length >= 2 &&
        document.querySelectorAll("#topology path.edge").length >= 2;
    }, null, { timeout: 30000 });
    const rows = await page.$$eval("#workloads tbody tr",
      (rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
    const nodes = await page.$$eval("#topology g.node", (ns) => ns.map((n) => n.dataset.name));
    const edges = await page.$$eval("#topology path.edge", (es) => es.map((e) => ({
      src: e.dataset.src, dst: e.dataset.dst, secured: e.classList.contains("secured"),
    })));
    await page.screenshot({ path: outDir + "/dashboard.png", fullPage: true });
    await page.click('#workloads a[href="#/w/shop/web"]');
    try {
      // Attached, not "visible": a flat line has an empty bounding box.
      await page.waitForSelector("#chart-rps path.line", { state: "attached", timeout: 45000 });
    } catch (e) {
      const state = await page.evaluate(async () => ({
        hash: location.hash,
        status: document.querySelector("#status").textContent,
        hidden: document.querySelector("#workload").hidden,
        chart: document.querySelector("#chart-rps").outerHTML.slice(0, 300),
        history: await (await fetch("/v1/history?workload=shop%2Fweb&step=10")).text(),
        now: Date.now() / 1000,
      }));
      throw new Error(e.message + "\n" + JSON.stringify(state));
    }
    const lines = await page.$$eval("#workload svg path.line", (ps) => ps.length);
    const title = await page.textContent("#wtitle");
    // The latency chart's legend and its lines, with their computed colours.
    const legend = await page.evaluate(() => {
      const fig = document.querySelector("#chart-latency").parentNode;
      return {
        keys: [...fig.querySelectorAll(".legend .key")].map((k) => ({
          label: k.textContent, color: getComputedStyle(k.querySelector("i")).backgroundColor,
          width: k.querySelector("i").getBoundingClientRect().width,
        })),
        lines: [...fig.querySelectorAll("path.line")].map((p) => ({
          key: p.dataset.key, color: getComputedStyle(p).stroke,
        })),
      };
    });
    // The authorization card: its rows' cells and classes.
    await page.waitForFunction(() => document.querySelectorAll("#wauthz tbody tr:not(.empty)").length >= 2,
      null, { timeout: 30000 });
    const authz = await page.$$eval("#wauthz tbody tr", (rs) => rs.map((r) => ({
      cls: r.className, cells: [...r.children].map((c) => c.textContent),
    })));
    await page.screenshot({ path: outDir + "/dashboard-workload.png", fullPage: true });
    // At 1400×900 the edges table (long names) shows its last column.
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.waitForFunction(() => document.querySelectorAll("#wedges tbody tr:not(.empty)").length >= 3,
      null, { timeout: 30000 });
    const wide = await page.evaluate(() => {
      const th = [...document.querySelectorAll("#wedges thead th")].find((t) => t.textContent === "SUCCESS");
      // Scrolled vertically only: a horizontal scroll would hide the fault.
      window.scrollTo(0, window.scrollY + th.getBoundingClientRect().top - 300);
      const b = th.getBoundingClientRect();
      const box = th.closest("table").parentNode.getBoundingClientRect();
      const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
      return {
        left: b.left, right: b.right, width: b.width, container_right: box.right,
        viewport: document.documentElement.clientWidth, page_width: document.documentElement.scrollWidth,
        hit: hit === th || th.contains(hit),
        cells: [...document.querySelectorAll("#wedges tbody tr")].map((r) =>
          [...r.children].map((c) => ({ text: c.textContent, title: c.title }))),
      };
    });
    await page.screenshot({ path: outDir + "/dashboard-workload-1400.png" });
    const foreign = requests.filter((r) => !r.startsWith(url));
    console.log(JSON.stringify({
      atLoad, emptyState, rows, nodes, edges, lines, title, legend, authz, wide, errors, foreign,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
