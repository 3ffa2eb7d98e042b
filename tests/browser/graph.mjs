// Real-browser test of the admin graph page: headless Chromium (Debian's
// `chromium`) driven by playwright-core. Run by tests/admin_browser.rs with:
//   CPM_ADMIN_URL  http://127.0.0.1:PORT of a running cpm with traffic
//   CPM_USER       the AOR whose PF and devices must be drawn
//   CPM_DEVICES    how many device nodes that user must have
//   CPM_SCREENSHOT where to save a PNG of the page
//   CPM_GROUP      (optional) a group whose CF node and member edges must be drawn
//   CPM_GROUP_PASSIVE (optional) a member of it whose PF is not active (dashed)
// Exit code 0 on success; any failure throws (non-zero exit, message on stderr).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.CPM_ADMIN_URL;
const user = process.env.CPM_USER;
const devices = Number(process.env.CPM_DEVICES || "1");
const shot = process.env.CPM_SCREENSHOT;
const group = process.env.CPM_GROUP;
const passive = process.env.CPM_GROUP_PASSIVE;
if (!url || !user) throw new Error("CPM_ADMIN_URL and CPM_USER are required");

const profile = mkdtempSync(join(tmpdir(), "cpm-chromium-"));
// A fresh profile directory (--user-data-dir) for every run.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 700 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url + "/", { waitUntil: "load" });

  // The user's PF node and its device nodes are drawn in the SVG.
  const pf = page.locator(`svg g.node[data-kind="pf"][data-user="${user}"]`);
  await pf.waitFor({ state: "visible", timeout: 15000 });
  const devs = page.locator(`svg g.node[data-kind="device"][data-user="${user}"]`);
  await page.waitForFunction(
    ([u, n]) => document.querySelectorAll(`svg g.node[data-kind="device"][data-user="${u}"]`).length >= n,
    [user, devices],
    { timeout: 15000 },
  );
  const ingress = await page.locator('svg g.node[data-kind="ingress"]').count();
  if (ingress < 1) throw new Error("no ingress node drawn");
  const edges = await page.locator(`svg path[data-from="pf:${user}"]`).count();
  if (edges < devices) throw new Error(`expected ${devices} PF→device edges, got ${edges}`);

  // The group's CF in its own column, with edges to its members' PFs.
  if (group) {
    const cf = page.locator(`svg g.node[data-kind="cf"][data-user="${group}"]`);
    await cf.waitFor({ state: "visible", timeout: 15000 });
    const cfBox = await cf.boundingBox(), pfBox = await pf.boundingBox();
    if (!(cfBox.x < pfBox.x)) throw new Error("the CF column is not left of the PF column");
    const toUser = await page.locator(`svg path[data-from="cf:${group}"][data-to="pf:${user}"][data-kind="member"]`).count();
    if (toUser !== 1) throw new Error(`expected a CF→${user} member edge, got ${toUser}`);
    if (passive) {
      await page.locator(`svg g.node[data-kind="pf-passive"][data-user="${passive}"]`).waitFor({ timeout: 10000 });
      const dashed = await page.locator(`svg path[data-from="cf:${group}"][data-to="pf:${passive}"][data-kind="member-passive"]`).count();
      if (dashed !== 1) throw new Error(`expected a passive member edge to ${passive}, got ${dashed}`);
    }
  }

  // It refreshes itself: the status line changes without a reload.
  const before = await page.locator("#status").textContent();
  await page.waitForFunction((b) => document.querySelector("#status").textContent !== b, before, { timeout: 10000 });

  // Search by user highlights it.
  await page.fill("#search", user.replace(/^sip:/, "").split("@")[0]);
  await page.locator(`svg g.node.match[data-kind="pf"][data-user="${user}"]`).waitFor({ timeout: 10000 });

  // Click-through to the user view.
  await pf.click();
  await page.waitForFunction((u) => document.querySelector("#user-title")?.textContent === u, user, { timeout: 10000 });
  const rows = await page.locator("#user-registrations tr").count();
  if (rows - 1 < devices) throw new Error(`user view lists ${rows - 1} registrations, expected ${devices}`);

  if (shot) await page.screenshot({ path: shot, fullPage: true });

  // Click-through to the group view.
  if (group) {
    await page.fill("#search", "");
    await page.locator(`svg g.node[data-kind="cf"][data-user="${group}"]`).click();
    await page.waitForFunction((g) => document.querySelector("#group-title")?.textContent === "group " + g, group, { timeout: 10000 });
    const members = await page.locator("#group-members tr").count();
    if (members < 1) throw new Error("group view lists no members");
  }
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log(`ok: ${user} with ${await devs.count()} device node(s), ${ingress} ingress node(s)`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
