// Plugins in Debian's Chromium: the admin sees the installed plugins on the Plugins screen and
// changes a plugin's settings through the form drawn from its config schema; an operator runs
// a plugin action from the chat's Actions menu and sees its result.
// Env: BASE, ADMIN_USER/ADMIN_PASS, OP_USER/OP_PASS (an operator who has accepted CHAT_ID), CHAT_ID.
// Prints "step …" lines, then "plugins ok" (exit 0) or FAIL (exit 1); screenshots go to $SHOTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const base = process.env.BASE;
const adminUser = process.env.ADMIN_USER || "admin";
const adminPass = process.env.ADMIN_PASS;
const opUser = process.env.OP_USER;
const opPass = process.env.OP_PASS;
const chatId = process.env.CHAT_ID;
const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });

const missing = Object.entries({ BASE: base, ADMIN_PASS: adminPass, OP_USER: opUser, OP_PASS: opPass, CHAT_ID: chatId })
  .filter(([, v]) => !v)
  .map(([k]) => k);
if (missing.length > 0) {
  console.log(`FAIL missing environment: ${missing.join(", ")}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const step = (s) => console.log("step " + s);
const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

async function signIn(user, pw) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/login`);
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(pw);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("logout").waitFor();
  return page;
}

/** The first of the locators to become visible, or null after the timeout. */
async function firstVisible(locators, timeout = 15000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    for (const l of locators) if (await l.isVisible().catch(() => false)) return l;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

let ok = false;
try {
  // The admin opens Administration → Plugins.
  const admin = await signIn(adminUser, adminPass);
  await admin.getByTestId("nav-admin").click();
  await admin.getByTestId("admin-nav-plugins").click();
  await admin.getByTestId("plugins-table").waitFor();
  for (const id of ["create-case", "greeting"]) {
    const row = admin.locator(`[data-testid=plugin-row][data-plugin="${id}"]`);
    await row.waitFor().catch(() => {
      throw new Error(`plugin ${id} is not listed`);
    });
    if ((await row.getAttribute("data-enabled")) !== "true") {
      const status = (await row.getByTestId("plugin-status").innerText()).trim();
      throw new Error(`plugin ${id} should be enabled, shows "${status}"`);
    }
  }
  await shot(admin, "plugins-01-list");
  step("Plugins screen lists create-case and greeting as enabled");

  // Settings of `greeting`: the time zone offset, a whole number from the config schema.
  const greeting = admin.locator("[data-testid=plugin-row][data-plugin=greeting]");
  await greeting.getByTestId("settings").click();
  let form = admin.getByTestId("plugin-settings-form");
  await form.getByTestId("schema-utc_offset").fill("180");
  await form.getByTestId("save").click();
  await form.getByTestId("saved").waitFor().catch(async () => {
    const err = await admin.locator("[data-testid=plugin-settings] .field-error, [data-testid=plugin-settings] [role=alert]").allInnerTexts();
    throw new Error(`saving the greeting settings failed: ${err.join("; ") || "no confirmation"}`);
  });
  // The saved value comes back from the server: close, reopen, and after a reload.
  await admin.getByTestId("plugin-settings").getByTestId("close").click();
  await admin.getByTestId("plugin-settings").waitFor({ state: "detached" });
  await greeting.getByTestId("settings").click();
  form = admin.getByTestId("plugin-settings-form");
  let shown = await form.getByTestId("schema-utc_offset").inputValue();
  if (shown !== "180") throw new Error(`utc_offset should show 180 after saving, shows "${shown}"`);
  await admin.reload();
  await admin.locator("[data-testid=plugin-row][data-plugin=greeting]").getByTestId("settings").click();
  shown = await admin.getByTestId("plugin-settings-form").getByTestId("schema-utc_offset").inputValue();
  if (shown !== "180") throw new Error(`utc_offset should be 180 after a reload, shows "${shown}"`);
  await shot(admin, "plugins-02-settings");
  step("greeting settings saved: utc_offset = 180");

  // The operator runs "Create case" in their chat.
  const op = await signIn(opUser, opPass);
  await op.goto(`${base}/chats/${encodeURIComponent(chatId)}`);
  await op.getByTestId("chat-title").waitFor();
  await op.getByTestId("actions-menu").click();
  const item = op.getByTestId("action-create-case-create-case");
  await item.waitFor().catch(() => {
    throw new Error("the Actions menu does not offer create-case");
  });
  await item.click();
  // A confirmation may come first, then the input form (subject, priority).
  const confirm = op.getByTestId("action-confirm-yes");
  const dialog = op.getByTestId("action-form");
  const result = op.getByTestId("action-result");
  let next = await firstVisible([confirm, dialog, result]);
  if (!next) throw new Error("nothing happened after choosing Create case");
  if (next === confirm) {
    await confirm.click();
    next = await firstVisible([dialog, result]);
  }
  if (next === dialog) {
    await dialog.getByTestId("schema-subject").fill("Broken parcel");
    await dialog.getByTestId("save").click();
  }
  const note = op.locator("[data-testid=action-result], [data-testid=msg-system]").filter({ hasText: "Broken parcel" }).first();
  await note.waitFor().catch(async () => {
    const text = (await result.count()) > 0 ? await result.innerText() : "no result shown";
    throw new Error(`the action result does not mention "Broken parcel": ${text}`);
  });
  const state = await result.getAttribute("data-state").catch(() => null);
  if (state === "error") throw new Error(`the action failed: ${await result.innerText()}`);
  await shot(op, "plugins-03-action");
  step("operator ran Create case; the result shows the note");

  ok = true;
  console.log("PASS plugins ok");
} catch (e) {
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: `${shots}/plugins-failure-${i}.png`, fullPage: true }).catch(() => {});
  }
  console.log("FAIL " + String(e?.message ?? e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
