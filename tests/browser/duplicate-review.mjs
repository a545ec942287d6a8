// The duplicates review page in Debian's Chromium: the admin enables the "Similar name" rule
// (off by default) and it stays enabled after a reload; in Chats section → Duplicates they run the
// search over all contacts and wait for it to finish; the «Иванов Иван» / "Ivan Ivanov" group (by
// "Similar name", reasons "…alike", without "Ivan Petrov") is dismissed and listed as dismissed;
// the same-phone group is merged from its pair's "Merge…" and moves from Open to Resolved.
// Env: BASE, ADMIN_USER/ADMIN_PASS, RU_ID and EN_ID (the two Ivans), PETROV_ID (must not be grouped),
// P1_ID and P2_ID (two contacts with one phone, their chats finished).
// Prints "step …" lines, then "PASS duplicate-review ok" (exit 0) or FAIL (exit 1); screenshots go to $SHOTS.
import { launch, requireEnv, shot, shots, signIn, step } from "./common.mjs";

const base = process.env.BASE;
const adminUser = process.env.ADMIN_USER;
const adminPass = process.env.ADMIN_PASS;
const ruId = process.env.RU_ID;
const enId = process.env.EN_ID;
const petrovId = process.env.PETROV_ID;
const p1Id = process.env.P1_ID;
const p2Id = process.env.P2_ID;

requireEnv({ BASE: base, ADMIN_USER: adminUser, ADMIN_PASS: adminPass, RU_ID: ruId, EN_ID: enId, PETROV_ID: petrovId, P1_ID: p1Id, P2_ID: p2Id });

const RULE = "Similar name";
const SCAN_TIMEOUT = 30000;

/** The duplicate rule row named `name` (its id makes the locator survive re-renders). */
async function ruleRow(page, name) {
  const rows = page.getByTestId("duplicate-rule-row");
  await rows.first().waitFor();
  const seen = [];
  for (let i = 0; i < (await rows.count()); i++) {
    const row = rows.nth(i);
    const value = await row.getByTestId("duplicate-rule-name").inputValue();
    seen.push(value);
    if (value === name) {
      const id = await row.getAttribute("data-rule");
      return id ? page.locator(`[data-testid=duplicate-rule-row][data-rule="${id}"]`) : row;
    }
  }
  throw new Error(`no duplicate rule named "${name}"; the rules are: ${seen.map((s) => `"${s}"`).join(", ") || "none"}`);
}

/** The groups on screen, for failure messages: status, rule and member names. */
async function shownGroups(page) {
  if ((await page.getByTestId("groups-empty").count()) > 0) return "no groups (empty state)";
  const list = await page.getByTestId("duplicate-group").evaluateAll((els) =>
    els.map((el) => {
      const names = [...el.querySelectorAll("[data-testid=group-member]")].map((m) => `${m.querySelector("a")?.textContent ?? "?"}#${(m.dataset.contact ?? "").slice(-6)}`);
      const rule = el.querySelector("[data-testid=group-rule]")?.textContent?.trim() ?? "?";
      return `${el.dataset.status} "${rule}" [${names.join(", ")}]`;
    }),
  );
  return list.join(" | ") || "nothing shown";
}

/** The listed group that has both contacts among its members. */
function groupWith(page, a, b) {
  return page
    .getByTestId("duplicate-group")
    .filter({ has: page.locator(`[data-testid=group-member][data-contact="${a}"]`) })
    .filter({ has: page.locator(`[data-testid=group-member][data-contact="${b}"]`) });
}

async function waitForGroup(page, a, b, what) {
  const g = groupWith(page, a, b);
  await g.first().waitFor().catch(async () => {
    throw new Error(`expected ${what} with ${a} and ${b} in the list; shown: ${await shownGroups(page)}`);
  });
  const n = await g.count();
  if (n !== 1) throw new Error(`expected one group with ${a} and ${b}, found ${n}: ${await shownGroups(page)}`);
  const id = await g.getAttribute("data-group");
  if (!id) throw new Error(`the group with ${a} and ${b} has no data-group attribute`);
  return id;
}

/** Picks a status filter and waits until the list shows the group `id` with that status. */
async function expectListed(page, filter, id, status) {
  await page.getByTestId("group-status").selectOption(filter);
  const g = page.locator(`[data-testid=duplicate-group][data-group="${id}"]`);
  await page
    .locator(`[data-testid=duplicate-group][data-group="${id}"][data-status="${status}"]`)
    .waitFor()
    .catch(async () => {
      const seen = (await g.count()) > 0 ? `it is listed with data-status="${await g.getAttribute("data-status")}"` : `it is not listed; shown: ${await shownGroups(page)}`;
      throw new Error(`under the "${filter}" filter the group ${id} should be listed with data-status="${status}", but ${seen}`);
    });
  return g;
}

/** Waits for the group `id` to leave the list (after a dismissal or merge); an inline error fails. */
async function expectGone(page, id, after) {
  const g = page.locator(`[data-testid=duplicate-group][data-group="${id}"]`);
  await g.waitFor({ state: "detached" }).catch(async () => {
    const err = g.getByTestId("group-error");
    const why = (await err.count()) > 0 ? `it shows the error "${(await err.innerText()).trim()}"` : `it is still listed with data-status="${await g.getAttribute("data-status")}"`;
    throw new Error(`after ${after} the group ${id} should leave the Open list, but ${why}`);
  });
}

const browser = await launch();

let ok = false;
try {
  const page = await signIn(browser, base, adminUser, adminPass);

  // a. Enable "Similar name"; it survives a reload.
  await page.goto(`${base}/admin/duplicate-rules`);
  await page.getByTestId("duplicate-rules-form").waitFor();
  let row = await ruleRow(page, RULE);
  const enabled = row.getByTestId("duplicate-rule-enabled");
  const wasOn = await enabled.isChecked();
  await enabled.check();
  await page.getByTestId("duplicate-rules-save").click();
  await page.getByTestId("saved").waitFor().catch(async () => {
    const err = page.locator("[data-testid=form-error], [data-testid=duplicate-rule-error]");
    const text = (await err.count()) > 0 ? (await err.allInnerTexts()).join("; ") : "no Saved mark and no error";
    throw new Error(`saving the duplicate rules failed: ${text}`);
  });
  await page.reload();
  await page.getByTestId("duplicate-rules-form").waitFor();
  row = await ruleRow(page, RULE);
  if (!(await row.getByTestId("duplicate-rule-enabled").isChecked())) throw new Error(`after a reload the rule "${RULE}" is disabled, expected enabled`);
  await shot(page, "duplicate-review-01-rules");
  step(`rule "${RULE}" enabled (was ${wasOn ? "already on" : "off"}) and still enabled after a reload`);

  // b. The search over all contacts, from the chats section.
  await page.getByTestId("nav-section").click();
  await page.getByTestId("nav-duplicates").click();
  await page.waitForURL((u) => u.pathname === "/section/duplicates").catch(() => {
    throw new Error(`the Duplicates link leads to ${page.url()}, expected /section/duplicates`);
  });
  const panel = page.getByTestId("duplicate-scan");
  await panel.waitFor();
  const start = page.getByTestId("duplicate-scan-start");
  await page.waitForFunction(() => {
    const b = document.querySelector("[data-testid=duplicate-scan-start]");
    return b && !b.disabled;
  }).catch(async () => {
    throw new Error(`the "Search all contacts" button stays disabled (scan state "${await panel.getAttribute("data-state")}")`);
  });
  const before = (await panel.getAttribute("data-scan")) ?? "";
  await start.click();
  const finished = await page
    .waitForFunction(
      (prev) => {
        const el = document.querySelector("[data-testid=duplicate-scan]");
        const err = document.querySelector("[data-testid=duplicate-scan-error]");
        if (err) return { error: err.textContent };
        return el && el.dataset.scan && el.dataset.scan !== prev && el.dataset.state !== "running" ? { state: el.dataset.state } : null;
      },
      before,
      { timeout: SCAN_TIMEOUT },
    )
    .then((h) => h.jsonValue())
    .catch(async () => {
      throw new Error(
        `the scan did not finish within ${SCAN_TIMEOUT / 1000} s: data-state="${await panel.getAttribute("data-state")}", data-scan="${await panel.getAttribute("data-scan")}" (before: "${before}")`,
      );
    });
  if (finished.error) throw new Error(`starting the scan failed: ${finished.error.trim()}`);
  if (finished.state !== "done") {
    const failure = panel.getByTestId("duplicate-scan-failure");
    const why = (await failure.count()) > 0 ? `: ${(await failure.innerText()).trim()}` : "";
    throw new Error(`the scan ended with data-state="${finished.state}", expected "done"${why}`);
  }
  const figures = `${(await panel.getByTestId("duplicate-scan-contacts").innerText()).trim()} contacts, ${(await panel.getByTestId("duplicate-scan-groups").innerText()).trim()} groups`;
  await shot(page, "duplicate-review-02-scan");
  step(`the search over all contacts is done (${figures})`);

  // c. The two Ivans: grouped by "Similar name", the reasons say "alike", Ivan Petrov is apart.
  const status = page.getByTestId("group-status");
  if ((await status.inputValue()) !== "open") throw new Error(`the status filter starts at "${await status.inputValue()}", expected "open"`);
  const names = await waitForGroup(page, ruId, enId, `an open "${RULE}" group`);
  const ng = page.locator(`[data-testid=duplicate-group][data-group="${names}"]`);
  const rule = (await ng.getByTestId("group-rule").innerText()).trim();
  if (rule !== RULE) throw new Error(`the Ivans' group has the rule "${rule}", expected "${RULE}"`);
  if ((await ng.getAttribute("data-status")) !== "open") throw new Error(`the Ivans' group has data-status="${await ng.getAttribute("data-status")}", expected "open"`);
  const reasons = (await ng.getByTestId("group-reasons").allInnerTexts()).join(" / ");
  if (!reasons.includes("alike")) throw new Error(`the Ivans' group's reasons do not mention "alike": ${reasons || "no reasons shown"}`);
  const petrov = await page.locator(`[data-testid=group-member][data-contact="${petrovId}"]`).count();
  if (petrov > 0) throw new Error(`Ivan Petrov (${petrovId}) is a member of a group, expected none: ${await shownGroups(page)}`);
  await shot(page, "duplicate-review-03-groups");
  step(`the Ivans are grouped by "${rule}" (${reasons.split("\n")[0]}); Ivan Petrov is not grouped`);

  await ng.getByTestId("group-dismiss").click();
  await expectGone(page, names, '"Not duplicates"');
  await expectListed(page, "dismissed", names, "dismissed");
  await shot(page, "duplicate-review-04-dismissed");
  step("the Ivans' group is dismissed and listed under Dismissed");

  // d. The same phone: merged from the pair's "Merge…", the group moves to Resolved.
  await status.selectOption("open");
  const phone = await waitForGroup(page, p1Id, p2Id, 'an open "Same phone" group');
  const pg = page.locator(`[data-testid=duplicate-group][data-group="${phone}"]`);
  const phoneRule = (await pg.getByTestId("group-rule").innerText()).trim();
  if (phoneRule !== "Same phone") throw new Error(`the same-phone group has the rule "${phoneRule}", expected "Same phone"`);
  const merge = pg.getByTestId("link-merge");
  if ((await merge.count()) !== 1) throw new Error(`the same-phone group has ${await merge.count()} "Merge…" buttons, expected 1`);
  const [a, b] = [await merge.getAttribute("data-a"), await merge.getAttribute("data-b")];
  if (![a, b].includes(p1Id) || ![a, b].includes(p2Id)) throw new Error(`the "Merge…" button pairs ${a} and ${b}, expected ${p1Id} and ${p2Id}`);
  await merge.click();
  const dialog = page.getByTestId("merge-dialog");
  await dialog.waitFor().catch(() => {
    throw new Error('"Merge…" opened no merge dialog');
  });
  await dialog.getByTestId("merge-field-name-merged").check();
  await shot(page, "duplicate-review-05-merge");
  await dialog.getByTestId("merge-confirm").click();
  await dialog.waitFor({ state: "detached" }).catch(async () => {
    const err = dialog.getByTestId("merge-error");
    const text = (await err.count()) > 0 ? (await err.innerText()).trim() : "the dialog stays open with no error";
    throw new Error(`the merge failed: ${text}`);
  });
  await expectGone(page, phone, "the merge");
  const resolved = await expectListed(page, "resolved", phone, "resolved");
  const merged = await resolved.locator("[data-testid=group-member][data-merged]").count();
  if (merged !== 1) throw new Error(`the resolved group shows ${merged} merged members, expected 1`);
  await shot(page, "duplicate-review-06-resolved");
  step(`the same-phone pair (${a} ← ${b}) is merged and the group is listed under Resolved`);

  ok = true;
  console.log("PASS duplicate-review ok");
} catch (e) {
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: `${shots}/duplicate-review-failure-${i}.png`, fullPage: true }).catch(() => {});
  }
  console.log("FAIL " + String(e?.message ?? e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
