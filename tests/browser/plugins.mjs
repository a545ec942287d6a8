// Plugins in Debian's Chromium: the admin sees the installed plugins on the Plugins screen and
// changes a plugin's settings through the form drawn from its config schema; an operator runs
// "Create case" from the chat's Actions menu (a process whose first step is the create-case
// plugin, which the menu does not offer on its own) and gets a link to the new case.
// Env: BASE, ADMIN_USER/ADMIN_PASS, OP_USER/OP_PASS (an operator who has accepted CHAT_ID), CHAT_ID;
// the client's first message in CHAT_ID is "My parcel arrived broken".
// Prints "step …" lines, then "plugins ok" (exit 0) or FAIL (exit 1); screenshots go to $SHOTS.
import { launch, requireEnv, shot, shots, signIn as signInAt, step } from "./common.mjs";

const base = process.env.BASE;
const adminUser = process.env.ADMIN_USER || "admin";
const adminPass = process.env.ADMIN_PASS;
const opUser = process.env.OP_USER;
const opPass = process.env.OP_PASS;
const chatId = process.env.CHAT_ID;

requireEnv({ BASE: base, ADMIN_PASS: adminPass, OP_USER: opUser, OP_PASS: opPass, CHAT_ID: chatId });

const browser = await launch();
const signIn = (user, pw) => signInAt(browser, base, user, pw);

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

  // The operator runs "Create case" in their chat: the process entry, not its plugin step.
  const op = await signIn(opUser, opPass);
  await op.goto(`${base}/chats/${encodeURIComponent(chatId)}`);
  await op.getByTestId("chat-title").waitFor();
  await op.getByTestId("actions-menu").click();
  const item = op.getByTestId("action-process-create-case");
  await item.waitFor().catch(() => {
    throw new Error("the Actions menu does not offer the Create case process");
  });
  if ((await op.getByTestId("action-create-case-create-case").count()) > 0) {
    throw new Error("the Actions menu offers the create-case plugin step, which is hidden by default");
  }
  await item.click();
  const result = op.getByTestId("action-result");
  const link = op.getByTestId("case-link");
  await link.waitFor().catch(async () => {
    const text = (await result.count()) > 0 ? await result.innerText() : "no result shown";
    throw new Error(`no case link after Create case: ${text}`);
  });
  const state = await result.getAttribute("data-state");
  if (state !== "ok") throw new Error(`Create case ended in state ${state}: ${await result.innerText()}`);
  const text = (await link.innerText()).trim();
  if (!/^Case #\d+: My parcel arrived broken$/.test(text)) throw new Error(`the case link reads "${text}"`);
  await shot(op, "plugins-03-action");
  step(`operator ran Create case; the result links to "${text}"`);

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
