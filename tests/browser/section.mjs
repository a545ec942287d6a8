// The chats section as a supervisor/admin sees it: list with filters, a chat record with its
// routing explanation, Totals with figures, CSV export, the contact page with its timeline.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const base = process.env.BASE;
const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const step = (s) => console.log("step " + s);
let ok = false;
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(`${base}/login`);
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(process.env.ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("nav-section").click();
  const table = page.getByTestId("chats-table");
  await table.getByText("Client done").waitFor();
  await table.getByText("Client open").waitFor();
  step("list shows the chats");

  await page.getByTestId("filter-status").selectOption("completed");
  await page.getByTestId("apply-filters").click();
  await table.getByText("Client open").waitFor({ state: "detached" });
  await table.getByText("Client done").waitFor();
  step("status filter");

  const csv = await page.evaluate(async () => {
    const a = document.querySelector("[data-testid=export-csv]");
    const r = await fetch(a.getAttribute("href"));
    return { status: r.status, text: await r.text() };
  });
  if (csv.status !== 200 || !csv.text.includes("Client done") || csv.text.includes("Client open")) throw new Error("CSV export: " + csv.status);
  step("CSV export follows the filters");

  await table.getByText("Client done").click();
  await page.getByTestId("chat-record").waitFor();
  await page.getByTestId("routing").getByText("accepted by op0").waitFor();
  await page.getByText("Finished by operator").waitFor();
  await page.screenshot({ path: `${shots}/section-record.png` });
  step("record with routing explanation");

  await page.getByTestId("nav-totals").click();
  await page.getByTestId("kpis").waitFor();
  const kpis = await page.getByTestId("kpis").innerText();
  if (!/^2\s/m.test(kpis)) throw new Error("totals: " + kpis.replace(/\n/g, " | "));
  await page.locator(".recharts-bar-rectangle").first().waitFor();
  await page.screenshot({ path: `${shots}/section-totals.png` });
  step("totals with a chart");

  await page.goBack();
  await page.getByTestId("chat-record").getByRole("link", { name: "Client done" }).click();
  await page.getByTestId("contact-page").waitFor();
  await page.getByTestId("timeline").locator("li").first().waitFor();
  step("contact page with timeline");
  ok = true;
  console.log("PASS chats section");
} catch (e) {
  console.log("FAIL " + String(e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
