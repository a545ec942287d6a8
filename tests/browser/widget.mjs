// Drives the widget demo page in Debian's Chromium: the visitor writes, then waits for the
// operator's reply to appear live. Prints PASS or FAIL; screenshots go to $SHOTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { watchCsp } from "./common.mjs";

const base = process.env.BASE;
const key = process.env.KEY;
const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let ok = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watchCsp(page);
  await page.goto(`${base}/widget/demo?key=${key}`);
  await page.getByTestId("fd-open").click();
  await page.getByTestId("fd-input").fill("Hello from Chromium");
  await page.getByTestId("fd-input").press("Enter");
  await page.getByTestId("fd-msg-in").first().waitFor({ timeout: 15000 });
  console.log("sent");
  await page.screenshot({ path: `${shots}/widget-sent.png` });
  const reply = page.getByTestId("fd-msg-out").filter({ hasText: "Hello from the operator" });
  await reply.waitFor({ timeout: 30000 });
  await page.screenshot({ path: `${shots}/widget-reply.png` });
  // The visitor identity persists across a reload.
  await page.reload();
  await page.getByTestId("fd-open").click();
  await page.getByTestId("fd-msg-out").filter({ hasText: "Hello from the operator" }).waitFor({ timeout: 15000 });
  ok = true;
  console.log("PASS widget round trip");
} catch (e) {
  console.log("FAIL " + String(e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
