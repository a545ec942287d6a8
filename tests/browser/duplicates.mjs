// Duplicate contacts in Debian's Chromium: the operator finds the widget visitor's contact as a
// duplicate of their chat's contact (same phone written two ways), merges it into the chat's
// contact keeping the visitor's name, and the merged contact's old page redirects to the master.
// Env: BASE, OP_USER/OP_PASS (an operator who has accepted CHAT_ID), CHAT_ID, OTHER_NAME (the
// duplicate's name), MERGED_ID (the duplicate's contact id), MASTER_ID (CHAT_ID's contact id).
// Prints "step …" lines, then "duplicates ok" (exit 0) or FAIL (exit 1); screenshots go to $SHOTS.
import { launch, requireEnv, shot, shots, signIn as signInAt, step } from "./common.mjs";

const base = process.env.BASE;
const opUser = process.env.OP_USER;
const opPass = process.env.OP_PASS;
const chatId = process.env.CHAT_ID;
const otherName = process.env.OTHER_NAME;
const mergedId = process.env.MERGED_ID;
const masterId = process.env.MASTER_ID;

requireEnv({ BASE: base, OP_USER: opUser, OP_PASS: opPass, CHAT_ID: chatId, OTHER_NAME: otherName, MERGED_ID: mergedId, MASTER_ID: masterId });

const browser = await launch();

let ok = false;
try {
  const op = await signInAt(browser, base, opUser, opPass);
  await op.goto(`${base}/chats/${encodeURIComponent(chatId)}`);
  await op.getByTestId("chat-title").waitFor();
  const card = op.getByTestId("contact-card");
  await card.getByTestId("find-duplicates").click();
  const panel = op.getByTestId("duplicates-panel");
  await panel.waitFor();
  const row = panel.locator(`[data-testid=duplicate-row][data-contact="${mergedId}"]`);
  await row.waitFor().catch(async () => {
    const none = (await panel.getByTestId("duplicates-none").count()) > 0;
    const rows = await panel.getByTestId("duplicate-row").allInnerTexts();
    throw new Error(`the duplicate ${mergedId} is not listed: ${none ? "no duplicates found" : rows.join(" | ") || "nothing shown"}`);
  });
  const rowText = await row.innerText();
  if (!rowText.includes(otherName)) throw new Error(`the duplicate row does not show "${otherName}": ${rowText}`);
  const rule = (await row.getByTestId("duplicate-rule").innerText()).trim();
  if (rule !== "Same phone") throw new Error(`the duplicate's rule reads "${rule}", expected "Same phone"`);
  await shot(op, "duplicates-01-panel");
  step(`find-duplicates lists ${otherName} by rule "${rule}"`);

  // Merge: the chat's contact stays the master, the duplicate's name survives.
  await row.getByTestId("duplicate-merge").click();
  const dialog = op.getByTestId("merge-dialog");
  await dialog.waitFor();
  if (!(await dialog.getByTestId("merge-master-current").isChecked())) throw new Error("the current contact is not the default master");
  if (!(await dialog.getByTestId("merge-field-name-master").isChecked())) throw new Error("the master's name is not chosen by default");
  await dialog.getByTestId("merge-field-name-merged").check();
  await shot(op, "duplicates-02-merge");
  await dialog.getByTestId("merge-confirm").click();
  await dialog.waitFor({ state: "detached" }).catch(async () => {
    const err = dialog.getByTestId("merge-error");
    const text = (await err.count()) > 0 ? await err.innerText() : "the dialog stays open";
    throw new Error(`the merge failed: ${text}`);
  });
  const name = card.getByTestId("contact-card-name");
  await op.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent?.trim() === want,
    ["[data-testid=contact-card] [data-testid=contact-card-name]", otherName],
    { timeout: 15000 },
  ).catch(async () => {
    const shown = (await name.count()) > 0 ? (await name.innerText()).trim() : "nothing";
    throw new Error(`after the merge the contact card shows "${shown}", expected "${otherName}"`);
  });
  await shot(op, "duplicates-03-merged");
  step(`merged; the chat's contact is now "${otherName}"`);

  // The merged contact's old page leads to the master.
  await op.goto(`${base}/contacts/${encodeURIComponent(mergedId)}`);
  await op.getByTestId("merged-redirect-note").waitFor().catch(() => {
    throw new Error("the merged contact's page shows no merged-redirect-note");
  });
  await op.waitForURL((u) => u.pathname === `/contacts/${masterId}`, { timeout: 15000 }).catch(() => {
    throw new Error(`the URL stays ${op.url()}, expected /contacts/${masterId}`);
  });
  await op.getByTestId("merged-redirect-note").waitFor().catch(() => {
    throw new Error("the redirect note disappears after the URL changes to the master");
  });
  const heading = (await op.getByTestId("contact-page").locator("h2").first().innerText()).trim();
  if (heading !== otherName) throw new Error(`the master's page is titled "${heading}", expected "${otherName}"`);
  await shot(op, "duplicates-04-redirect");
  step(`the old contact page redirects to /contacts/${masterId} with a note`);

  ok = true;
  console.log("PASS duplicates ok");
} catch (e) {
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: `${shots}/duplicates-failure-${i}.png`, fullPage: true }).catch(() => {});
  }
  console.log("FAIL " + String(e?.message ?? e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
