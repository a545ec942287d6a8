// The administration screens in Debian's Chromium: an admin creates a queue and a message
// template through the forms, a bad input shows its error next to the field, an operator uses
// the new template in a widget visitor's chat, and the admin's UI is checked in Russian.
// Env: BASE, KEY (widget key), PASSWORD (operators op0/op1), ADMIN_PASSWORD (user `admin`).
// Prints "step …" lines, then PASS or FAIL; screenshots go to $SHOTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const base = process.env.BASE;
const key = process.env.KEY;
const password = process.env.PASSWORD;
const adminPassword = process.env.ADMIN_PASSWORD;
const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });

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

/** The visible text of the page, as a user reads it. */
const visibleText = (page) => page.evaluate(() => document.body.innerText);

let ok = false;
try {
  // The admin opens the administration; the default screen is Users.
  const admin = await signIn("admin", adminPassword);
  await admin.getByTestId("nav-admin").click();
  await admin.getByTestId("admin-nav-users").and(admin.locator(".active")).waitFor();
  await admin.getByTestId("user-row").filter({ hasText: "op0" }).waitFor();
  step("admin signed in; administration shows the users");

  // A queue "VIP" with Operator 0 as its member.
  await admin.getByTestId("admin-nav-queues").click();
  await admin.getByTestId("queue-row").filter({ hasText: "Support" }).waitFor();
  await admin.getByRole("button", { name: "New queue" }).click();
  let form = admin.getByTestId("queue-form");
  await form.getByLabel("Name", { exact: true }).fill("VIP");
  await form.getByLabel("Routing rule").selectOption("available_operator");
  await form.getByLabel("Chat acceptance time, sec").fill("120");
  await form.getByLabel("Operator 0").check();
  await form.getByTestId("save").click();
  await form.getByTestId("saved").waitFor();
  const vip = admin.getByTestId("queue-row").filter({ hasText: "VIP" });
  await vip.filter({ hasText: "To an available operator" }).waitFor();
  if ((await vip.locator("td").nth(4).innerText()).trim() !== "1") throw new Error("VIP should have one member");
  await shot(admin, "admin-01-queue");
  step("queue VIP created with Operator 0");

  // Bad input: an empty name is blocked in the browser, next to the field...
  await admin.getByRole("button", { name: "New queue" }).click();
  form = admin.getByTestId("queue-form");
  await form.getByLabel("Name", { exact: true }).waitFor();
  await form.getByTestId("save").click();
  await form.getByTestId("error-name").waitFor();
  await form.locator("input[aria-invalid=true]").first().waitFor();
  const nameError = await form.getByTestId("error-name").innerText();
  if (!nameError.trim()) throw new Error("empty field error");
  // ...a taken name comes back from the server (409) and is shown next to the name...
  await form.getByLabel("Name", { exact: true }).fill("VIP");
  await admin.waitForFunction(() => !document.querySelector("[data-testid=queue-form] [data-testid=error-name]"));
  await form.getByTestId("save").click();
  await form.getByTestId("error-name").filter({ hasText: "already exists" }).waitFor();
  // ...and an acceptance time of 0 is refused next to its field, which gets the focus.
  await form.getByLabel("Name", { exact: true }).fill("Night shift");
  await form.getByLabel("Chat acceptance time, sec").fill("0");
  await form.getByTestId("save").click();
  await form.getByTestId("error-accept_timeout_secs").filter({ hasText: "from 1 to 86400" }).waitFor();
  const focused = await admin.evaluate(() => document.activeElement?.getAttribute("aria-invalid"));
  if (focused !== "true") throw new Error("the invalid field should have the focus");
  await shot(admin, "admin-02-field-error");
  await form.getByTestId("close").click();
  await form.waitFor({ state: "detached" });
  if ((await admin.getByTestId("queue-row").filter({ hasText: "Night shift" }).count()) !== 0) {
    throw new Error("an invalid queue was saved");
  }
  step("field errors shown next to the fields (browser checks and the server's 409)");

  // A global template.
  await admin.getByTestId("admin-nav-templates").click();
  await admin.getByRole("button", { name: "New template" }).click();
  form = admin.getByTestId("template-form");
  await form.getByLabel("Name", { exact: true }).fill("Farewell VIP");
  // The server checks the macro syntax; its error names the text field.
  await form.getByLabel("Text").fill("Bye, {{contact.first_name");
  await form.getByTestId("save").click();
  await form.getByTestId("error-body").filter({ hasText: "handlebars" }).waitFor();
  await form.getByLabel("Text").fill("Bye, {{contact.first_name}}!");
  if ((await form.getByRole("combobox", { name: "Queue" }).inputValue()) !== "") throw new Error("template should default to all queues");
  await form.getByTestId("save").click();
  await form.getByTestId("saved").waitFor();
  await admin.getByTestId("template-row").filter({ hasText: "Farewell VIP" }).filter({ hasText: "All queues" }).waitFor();
  await shot(admin, "admin-03-template");
  step("template Farewell VIP created for all queues after a server-side syntax error on its text");

  // The widget channel shows its embed code.
  await admin.getByTestId("admin-nav-channels").click();
  await admin.getByTestId("channel-row").filter({ hasText: "Website" }).getByTestId("edit").click();
  const snippet = await admin.getByTestId("widget-snippet").inputValue();
  if (!snippet.includes(`data-key="${key}"`) || !snippet.includes(`${base}/widget.js`)) {
    throw new Error("unexpected widget snippet: " + snippet);
  }
  step("widget channel shows its embed snippet");

  // An operator uses the template in a visitor's chat.
  const op = await signIn("op0", password);
  await op.getByTestId("status-active").click();
  await op.getByTestId("status-active").and(op.locator("[aria-pressed=true]")).waitFor();
  const vctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const v = await vctx.newPage();
  await v.goto(`${base}/widget/demo?key=${key}`);
  await v.getByTestId("fd-open").click();
  await v.getByTestId("fd-input").fill("Thanks, that is all");
  await v.getByTestId("fd-input").press("Enter");
  await v.getByTestId("fd-msg-in").filter({ hasText: "Thanks, that is all" }).waitFor();
  await op.getByTestId("accept").click();
  await op.getByTestId("msg-inbound").filter({ hasText: "Thanks, that is all" }).waitFor();
  const reply = op.getByTestId("reply");
  await reply.fill("//Farewell");
  await op.getByTestId("template-picker").getByText("Farewell VIP").waitFor();
  await reply.press("Enter");
  await op.waitForFunction(() => document.querySelector("[data-testid=reply]")?.value.startsWith("Bye, Visitor!"));
  await shot(op, "admin-04-template-used");
  step("operator inserts the new template with macros substituted");

  // Russian: every screen of the administration, with none of the English labels left.
  await admin.getByTestId("language").selectOption("ru");
  await admin.getByTestId("admin-nav-queues").filter({ hasText: "Очереди" }).waitFor();
  const english = [
    "Administration", "Users", "Queues", "Channels", "Message templates", "System settings",
    "New user", "New queue", "New channel", "New template", "Edit", "Delete", "Save", "Close",
    "Username", "Display name", "Role", "Status", "Number of simultaneous chats", "Disabled",
    "Routing rule", "To all operators", "To an available operator", "Acceptance time", "Auto-finish",
    "Name", "Type", "Queue", "Active", "Website widget", "All queues", "Text", "Search by name or text",
    "Widget title", "Code to insert", "Chat acceptance time", "Timeout to finish",
  ];
  const screens = {
    users: async () => admin.getByTestId("user-row").first().waitFor(),
    queues: async () => {
      await admin.getByTestId("queue-row").filter({ hasText: "Доступному оператору" }).waitFor();
      await admin.getByTestId("queue-row").filter({ hasText: "VIP" }).getByTestId("edit").click();
      await admin.getByTestId("queue-form").getByLabel("Правило распределения").waitFor();
    },
    channels: async () => {
      await admin.getByTestId("channel-row").filter({ hasText: "Website" }).getByTestId("edit").click();
      await admin.getByTestId("channel-form").getByLabel("Заголовок виджета").waitFor();
    },
    templates: async () => admin.getByTestId("template-row").filter({ hasText: "Все очереди" }).first().waitFor(),
    settings: async () => admin.getByTestId("settings-form").getByLabel("Количество одновременных чатов").waitFor(),
  };
  for (const [name, ready] of Object.entries(screens)) {
    await admin.getByTestId(`admin-nav-${name}`).click();
    await ready();
    const text = await visibleText(admin);
    for (const en of english) {
      if (new RegExp(`\\b${en}\\b`).test(text)) throw new Error(`untranslated on ${name} in Russian UI: ${en}`);
    }
  }
  await admin.getByText("Очереди", { exact: true }).first().waitFor();
  await shot(admin, "admin-05-russian");
  step("administration in Russian");

  // Settings save in Russian too.
  const settings = admin.getByTestId("settings-form");
  await settings.getByLabel("Количество одновременных чатов").fill("101");
  await settings.getByTestId("save").click();
  await settings.getByTestId("error-simultaneous_chats").filter({ hasText: "от 1 до 100" }).waitFor();
  await settings.getByLabel("Количество одновременных чатов").fill("6");
  await settings.getByTestId("save").click();
  await settings.getByTestId("saved").filter({ hasText: "Сохранено" }).waitFor();
  step("settings saved");

  ok = true;
  console.log("PASS admin flow");
} catch (e) {
  console.log("FAIL " + String(e).split("\n")[0]);
  for (const [i, ctx] of browser.contexts().entries()) {
    for (const page of ctx.pages()) await shot(page, `admin-fail-${i}`).catch(() => {});
  }
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
