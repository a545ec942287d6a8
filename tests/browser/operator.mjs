// The operator web app in Debian's Chromium: two operators and a widget visitor.
// Prints "step …" lines, then PASS or FAIL; screenshots go to $SHOTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { watchCsp } from "./common.mjs";

const base = process.env.BASE;
const key = process.env.KEY;
const password = process.env.PASSWORD;
const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=", "base64");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const step = (s) => console.log("step " + s);
const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png` });

async function operator(user) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  watchCsp(page);
  await page.goto(`${base}/login`);
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("status-active").click();
  await page.getByTestId("status-active").and(page.locator("[aria-pressed=true]")).waitFor();
  return page;
}

async function visitor() {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await ctx.newPage();
  watchCsp(page);
  await page.goto(`${base}/widget/demo?key=${key}`);
  await page.getByTestId("fd-open").click();
  return page;
}

async function visitorSays(page, text) {
  await page.getByTestId("fd-input").fill(text);
  await page.getByTestId("fd-input").press("Enter");
  await page.getByTestId("fd-msg-in").filter({ hasText: text }).waitFor();
}

let ok = false;
try {
  const anna = await operator("op0");
  const boris = await operator("op1");
  step("operators signed in and Active");

  // A visitor writes; both operators see the counter (rule "to all operators").
  const v = await visitor();
  await visitorSays(v, "I need help with order 42");
  await anna.getByTestId("new-counter").filter({ hasText: "1" }).waitFor();
  await boris.getByTestId("new-counter").filter({ hasText: "1" }).waitFor();
  await shot(anna, "01-new-chat");
  step("new chat offered to both");

  // Anna accepts; it disappears for Boris.
  await anna.getByTestId("accept").click();
  await anna.getByTestId("msg-inbound").filter({ hasText: "order 42" }).waitFor();
  await boris.getByTestId("new-counter").waitFor({ state: "detached" });
  if ((await boris.getByTestId("accept").count()) !== 0) throw new Error("Boris still sees the taken chat");
  await anna.getByTestId("load").filter({ hasText: "1/5" }).waitFor();
  step("accepted; gone for the other operator");

  // `//` opens the template picker; Enter inserts the text with macros substituted.
  const reply = anna.getByTestId("reply");
  await reply.fill("//greet");
  await anna.getByTestId("template-picker").getByRole("option", { name: /Greeting/ }).waitFor();
  await reply.press("Enter");
  await anna.waitForFunction(() => document.querySelector("[data-testid=reply]")?.value.startsWith("Hello, Visitor! I am Operator."));
  await shot(anna, "02-template");
  step("template inserted with macros");

  // The draft survives a reload.
  await reply.press("End");
  await reply.type(" See you soon.");
  await anna.waitForTimeout(900);
  await anna.reload();
  await anna.waitForFunction(() => document.querySelector("[data-testid=reply]")?.value.includes("See you soon."));
  step("draft restored after reload");

  // Enter sends; the visitor sees it live.
  await anna.getByTestId("reply").press("Enter");
  await v.getByTestId("fd-msg-out").filter({ hasText: "Hello, Visitor! I am Operator." }).waitFor();
  await anna.getByTestId("msg-outbound").filter({ hasText: "See you soon." }).waitFor();
  step("reply delivered to the visitor");

  // A failed send keeps the text with a retry; nothing typed is lost.
  await anna.route("**/api/v1/chats/*/messages", (route) => route.abort("internetdisconnected"));
  await anna.getByTestId("reply").fill("Are you still there?");
  await anna.getByTestId("reply").press("Enter");
  await anna.getByTestId("send-error").waitFor();
  if ((await anna.getByTestId("reply").inputValue()) !== "Are you still there?") throw new Error("failed send lost the text");
  await anna.unroute("**/api/v1/chats/*/messages");
  await anna.getByTestId("send-error").getByRole("button").click();
  await v.getByTestId("fd-msg-out").filter({ hasText: "Are you still there?" }).waitFor();
  await anna.waitForFunction(() => document.querySelector("[data-testid=reply]")?.value === "");
  step("failed send kept with a retry");

  // A narrow window still shows the lists, the transcript and the reply box.
  await anna.setViewportSize({ width: 420, height: 800 });
  for (const id of ["active-list", "transcript", "reply"]) {
    const box = await anna.getByTestId(id).boundingBox();
    if (!box || box.width < 200 || box.x + box.width > 421) throw new Error(`narrow layout: ${id} ${JSON.stringify(box)}`);
  }
  await shot(anna, "02b-narrow");
  await anna.setViewportSize({ width: 1280, height: 800 });
  step("narrow window");

  // Send a file.
  await anna.getByTestId("attach").setInputFiles({ name: "receipt.png", mimeType: "image/png", buffer: PNG });
  await anna.getByTestId("pending-files").filter({ hasText: "receipt.png" }).waitFor();
  await anna.getByTestId("send").click();
  await anna.locator("[data-testid=msg-outbound] img[alt='receipt.png']").waitFor();
  await v.locator("img[alt='receipt.png']").waitFor();
  await shot(anna, "03-file");
  step("file sent");

  // Transfer to Boris, who sees it arrive.
  await anna.getByTestId("transfer").click();
  await anna.getByTestId("transfer-dialog").waitFor();
  await anna.getByTestId("transfer-operator").filter({ hasText: "Operator 1" }).click();
  await boris.getByTestId("active-list").getByText("Visitor").waitFor();
  await boris.getByTestId("active-list").getByText("Visitor").click();
  await boris.getByTestId("msg-system").filter({ hasText: "Transferred to Operator 1" }).waitFor();
  step("transferred to the second operator");

  // Boris finishes; a new visitor message shows a new chat with the earlier history.
  await boris.getByTestId("finish").click();
  await v.getByText("The operator has finished the chat").waitFor();
  await visitorSays(v, "One more thing");
  await boris.getByTestId("new-counter").filter({ hasText: "1" }).waitFor();
  await boris.getByTestId("accept").click();
  await boris.getByTestId("msg-inbound").filter({ hasText: "order 42" }).waitFor();
  await boris.getByTestId("msg-inbound").filter({ hasText: "One more thing" }).waitFor();
  await boris.getByText("Earlier conversation").waitFor();
  // The contact card beside the chat lists the earlier chat.
  await boris.getByTestId("contact-card").getByTestId("earlier-chats").locator("li").first().waitFor();
  await shot(boris, "04-history");
  step("new chat after finish shows the earlier history");

  // Russian: the seed's terms.
  await boris.getByTestId("language").selectOption("ru");
  await boris.getByRole("button", { name: "Завершить чат" }).waitFor();
  await boris.getByText("Активные").first().waitFor();
  // System lines are translated too; only what people wrote stays as written.
  await boris.getByTestId("msg-system").filter({ hasText: "Переведён на Operator 1" }).waitFor();
  const body = await boris.evaluate(() => {
    const clone = document.body.cloneNode(true);
    clone.querySelectorAll("[data-testid=msg-inbound] .body, [data-testid=msg-outbound] .body").forEach((n) => n.remove());
    return clone.innerText;
  });
  for (const en of ["Finish chat", "Transfer", "Accept chat", "Active", "Inactive", "Send", "Templates", "Log out", "Chat finished", "Earlier", "Identities", " sent"]) {
    if (body.includes(en)) throw new Error(`untranslated in Russian UI: ${en}`);
  }
  await shot(boris, "05-russian");
  step("Russian UI");

  ok = true;
  console.log("PASS operator flow");
} catch (e) {
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: `${shots}/failure-${i}.png` }).catch(() => {});
  }
  console.log("FAIL " + String(e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
