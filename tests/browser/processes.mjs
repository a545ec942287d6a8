// Processes, cases and tasks in Debian's Chromium: an operator runs "Create case" from the
// chat's Actions menu, follows the link to the case page and from there to the contact's
// timeline, and completes a callback task through its form; the admin sees the deployed
// processes, rejects a broken BPMN file with the element named, edits the chat Actions menu,
// opens an instance with its diagram, and retries an incident until the instance completes.
// Env: BASE, ADMIN_USER/ADMIN_PASS, OP_USER/OP_PASS/OP_NAME (an operator who has accepted
// CHAT_ID, whose client "CONTACT_NAME" first wrote "My parcel arrived broken"), CHAT_ID,
// INSTANCE_ID (a callback instance started from the chat by the operator: its task is TASK_NAME),
// INCIDENT_INSTANCE_ID (optional: an instance with an open incident that a retry resolves).
// Prints "step …" lines, then "PASS processes ok" (exit 0) or FAIL (exit 1); screenshots go to $SHOTS.
import { launch, requireEnv, shot, shots, signIn as signInAt, step } from "./common.mjs";

const base = process.env.BASE;
const adminUser = process.env.ADMIN_USER || "admin";
const adminPass = process.env.ADMIN_PASS;
const opUser = process.env.OP_USER;
const opPass = process.env.OP_PASS;
const opName = process.env.OP_NAME;
const contactName = process.env.CONTACT_NAME;
const chatId = process.env.CHAT_ID;
const instanceId = process.env.INSTANCE_ID;
const incidentInstanceId = process.env.INCIDENT_INSTANCE_ID || "";
const taskName = process.env.TASK_NAME || "Call the client back";
const subject = "My parcel arrived broken";

requireEnv({
  BASE: base, ADMIN_PASS: adminPass, OP_USER: opUser, OP_PASS: opPass, OP_NAME: opName,
  CONTACT_NAME: contactName, CHAT_ID: chatId, INSTANCE_ID: instanceId,
});

// A process the engine refuses: script tasks are not supported; the error names the element.
const BAD_BPMN = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_bad">
  <bpmn:process id="browser-bad" name="Broken" isExecutable="true">
    <bpmn:startEvent id="Start_1" />
    <bpmn:endEvent id="End_1" />
    <bpmn:scriptTask id="Script_1" />
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_1" targetRef="End_1" />
  </bpmn:process>
</bpmn:definitions>
`;

const browser = await launch();
const signIn = (user, pw) => signInAt(browser, base, user, pw);

/** The first of the locators to become visible, or null after the timeout. */
async function firstVisible(locators, timeout = 15000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    for (const l of locators) if (await l.isVisible().catch(() => false)) return l;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

const textOf = async (locator) => (await locator.innerText()).trim();

/** Waits until the instance page shows `state`, reloading now and then; fails after `timeout`. */
async function waitForState(page, state, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let reloaded = Date.now();
  let shown = "";
  while (Date.now() < deadline) {
    shown = (await page.getByTestId("instance-state").getAttribute("data-state").catch(() => null)) ?? "";
    if (shown === state) return;
    // The page polls a running instance itself; a reload covers a missed update.
    if (Date.now() - reloaded > 5000) {
      await page.reload();
      reloaded = Date.now();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the instance should be ${state}, the page shows "${shown}"`);
}

let ok = false;
try {
  // 1. The operator runs "Create case" from the chat's Actions menu.
  const op = await signIn(opUser, opPass);
  await op.goto(`${base}/chats/${encodeURIComponent(chatId)}`);
  await op.getByTestId("chat-title").waitFor();
  if ((await op.getByTestId("chat-case-link").count()) > 0) throw new Error("the chat links to a case before one is created");
  await op.getByTestId("actions-menu").click();
  const item = op.getByTestId("action-process-create-case");
  await item.waitFor().catch(() => {
    throw new Error("the Actions menu does not offer the Create case process");
  });
  await item.click();
  const result = op.getByTestId("action-result");
  const caseLink = op.getByTestId("case-link");
  const next = await firstVisible([caseLink, result.and(op.locator("[data-state=error]"))], 30000);
  if (next !== caseLink) {
    const text = (await result.count()) > 0 ? await result.innerText() : "no result shown";
    throw new Error(`no case link after Create case: ${text}`);
  }
  const linkText = await textOf(caseLink);
  if (!linkText.includes(subject)) throw new Error(`the case link should name "${subject}": "${linkText}"`);
  // The chat header now links to the case as well.
  await op.getByTestId("chat-case-link").waitFor().catch(() => {
    throw new Error("the chat header does not link to the new case");
  });
  await shot(op, "processes-01-create-case");
  step(`Create case ran from the chat: "${linkText}"`);

  // The case page shows what the process put together.
  await caseLink.click();
  await op.getByTestId("case-page").waitFor();
  const casePath = new URL(op.url()).pathname;
  const got = {
    subject: await textOf(op.getByTestId("case-subject")),
    description: await textOf(op.getByTestId("case-description")),
    responsible: await textOf(op.getByTestId("case-responsible")),
    contact: await textOf(op.getByTestId("case-contact")),
    channel: await textOf(op.getByTestId("case-channel")),
    number: await textOf(op.getByTestId("case-number")),
    created: await textOf(op.getByTestId("case-created")),
  };
  if (got.subject !== subject) throw new Error(`case-subject should be "${subject}", is "${got.subject}"`);
  if (!got.description.includes(`Client: ${subject}`)) throw new Error(`case-description lacks "Client: ${subject}": "${got.description}"`);
  if (got.responsible !== opName) throw new Error(`case-responsible should be "${opName}", is "${got.responsible}"`);
  if (got.contact !== contactName) throw new Error(`case-contact should be "${contactName}", is "${got.contact}"`);
  if (!got.channel || got.channel === "—") throw new Error(`case-channel is empty: "${got.channel}"`);
  if (!/#\d+/.test(got.number)) throw new Error(`case-number shows no number: "${got.number}"`);
  if (!got.created || got.created === "—") throw new Error("case-created is empty");
  const chats = op.getByTestId("case-chat-link");
  if ((await chats.count()) < 1) throw new Error("the case lists no linked chat");
  if ((await op.getByTestId("case-start-chat").count()) !== 1) throw new Error("the case page offers no Start chat");

  // Editing: the priority goes to High and stays after a reload.
  await op.getByTestId("case-edit-priority").selectOption("high");
  await op.getByTestId("case-save").click();
  await op.getByTestId("case-saved").waitFor().catch(async () => {
    const err = await op.locator("[data-testid=case-form] .field-error, [data-testid=case-form] [role=alert]").allInnerTexts();
    throw new Error(`saving the case failed: ${err.join("; ") || "no confirmation"}`);
  });
  await op.reload();
  await op.getByTestId("case-priority").and(op.locator("[data-priority=high]")).waitFor().catch(async () => {
    throw new Error(`case-priority should be High after saving, shows "${await textOf(op.getByTestId("case-priority"))}"`);
  });
  await shot(op, "processes-02-case");
  step(`case page: ${got.number} "${got.subject}", ${got.contact} via ${got.channel}, responsible ${got.responsible}; priority saved`);

  // 2. From the case to the contact: the timeline lists the case.
  await op.getByTestId("case-contact").click();
  await op.getByTestId("contact-page").waitFor();
  const entry = op.getByTestId("timeline-case").filter({ hasText: subject });
  await entry.first().waitFor().catch(() => {
    throw new Error("the contact's timeline does not list the case");
  });
  await shot(op, "processes-03-contact");
  step("the contact's timeline lists the case");

  // 3. The task list: the callback task waits for this operator; its form completes it.
  await op.getByTestId("nav-tasks").click();
  await op.getByTestId("tasks-page").waitFor();
  const task = op.getByTestId("task-item").filter({ hasText: taskName }).first();
  await task.waitFor().catch(() => {
    throw new Error(`the task list has no "${taskName}"`);
  });
  const badge = await textOf(op.getByTestId("tasks-count")).catch(() => "");
  if (!/^\d+$/.test(badge) || Number(badge) < 1) throw new Error(`the Tasks link shows no open count: "${badge}"`);
  const taskId = await task.getAttribute("data-task");
  await task.getByTestId("task-open").click();
  const detail = op.getByTestId("task-detail");
  await detail.getByTestId("schema-outcome").selectOption({ label: "reached" });
  await detail.getByTestId("schema-notes").fill("Reached the client; a new parcel is on its way.");
  await shot(op, "processes-04-task");
  await detail.getByTestId("task-complete").click();
  await op.locator(`[data-testid=task-item][data-task="${taskId}"]`).waitFor({ state: "detached" }).catch(async () => {
    const err = await detail.locator(".field-error, [role=alert]").allInnerTexts().catch(() => []);
    throw new Error(`the task stays in the list after Complete: ${err.join("; ") || "no error shown"}`);
  });
  step(`"${taskName}" completed with outcome "reached"; it left the list`);

  // 4. The admin: processes, a rejected deployment, the chat menu, an instance's diagram.
  const admin = await signIn(adminUser, adminPass);
  await admin.getByTestId("nav-admin").click();
  await admin.getByTestId("admin-processes").click();
  await admin.getByTestId("processes-table").waitFor();
  for (const key of ["create-case", "callback"]) {
    await admin.locator(`[data-testid=process-row][data-process="${key}"]`).waitFor().catch(() => {
      throw new Error(`process ${key} is not listed`);
    });
  }
  await admin.getByTestId("process-upload").setInputFiles({ name: "broken.bpmn", mimeType: "application/xml", buffer: Buffer.from(BAD_BPMN) });
  const deployError = admin.getByTestId("process-deploy-error");
  await deployError.waitFor().catch(() => {
    throw new Error("deploying a BPMN file with a script task shows no error");
  });
  const deployText = await textOf(deployError);
  if (!deployText.includes("Script_1")) throw new Error(`the deploy error does not name the element Script_1: "${deployText}"`);
  if ((await admin.locator('[data-testid=process-row][data-process="browser-bad"]').count()) > 0) throw new Error("a rejected file was deployed");
  if (incidentInstanceId) {
    await admin.locator(`[data-testid=incident-row][data-instance="${incidentInstanceId}"]`).waitFor().catch(() => {
      throw new Error("the open incident is not listed");
    });
  }
  await shot(admin, "processes-05-admin");
  step(`Processes lists create-case and callback; a broken file is refused: "${deployText}"`);

  // The chat Actions menu: "Call back" is there; an entry without a target is refused by row.
  await admin.getByTestId("admin-chat-actions").click();
  await admin.getByTestId("chat-actions-table").waitFor();
  const callBack = admin.locator('[data-testid=chat-action-row][data-target="callback"]');
  await callBack.waitFor().catch(() => {
    throw new Error("the chat settings do not list the callback entry");
  });
  const caption = await callBack.getByTestId("chat-action-caption").inputValue();
  if (caption !== "Call back") throw new Error(`the callback entry's caption should be "Call back", is "${caption}"`);
  const before = await admin.getByTestId("chat-action-row").count();
  await admin.getByTestId("chat-action-add").click();
  const added = admin.getByTestId("chat-action-row").nth(before);
  await added.getByTestId("chat-action-caption").fill("Nothing yet");
  await admin.getByTestId("chat-actions-save").click();
  const rowError = added.getByTestId("chat-action-error");
  await rowError.waitFor().catch(() => {
    throw new Error("saving an entry without a target shows no error on its row");
  });
  if ((await rowError.getAttribute("data-field")) !== "target") throw new Error(`the error should be about the target: "${await textOf(rowError)}"`);
  await added.getByTestId("chat-action-delete").click();
  await admin.getByTestId("chat-actions-save").click();
  await admin.getByTestId("chat-actions-form").getByTestId("saved").waitFor();
  await shot(admin, "processes-06-chat-actions");
  step("chat settings: the entry without a target was refused on its row; the menu saved again");

  // The callback instance: its diagram is drawn, and completing the task completed it.
  await admin.getByTestId("admin-processes").click();
  const row = admin.locator(`[data-testid=instance-row][data-instance="${instanceId}"]`);
  await row.waitFor().catch(() => {
    throw new Error(`instance ${instanceId} is not listed`);
  });
  await row.getByTestId("instance-link").click();
  await admin.getByTestId("instance-page").waitFor();
  await admin.locator('[data-testid=bpmn-canvas] svg g[data-element-id="Task_call"]').waitFor().catch(async () => {
    const err = await admin.getByTestId("bpmn-error").innerText().catch(() => "no error shown");
    throw new Error(`the diagram does not show Task_call: ${err}`);
  });
  await waitForState(admin, "completed");
  await admin.getByTestId("instance-history").locator("tr[data-event=completed]").filter({ hasText: "Task_call" }).first().waitFor();
  const vars = await textOf(admin.getByTestId("instance-variables"));
  if (!vars.includes('"outcome": "reached"')) throw new Error(`the variables lack the task's outcome: ${vars.slice(0, 300)}`);
  await shot(admin, "processes-07-instance");
  step("the callback instance: diagram drawn, completed with outcome reached");

  // The incident: marked on the diagram; Retry lets the instance finish.
  if (incidentInstanceId) {
    await admin.goto(`${base}/admin/processes/instances/${encodeURIComponent(incidentInstanceId)}`);
    await admin.getByTestId("instance-page").waitFor();
    const incident = admin.getByTestId("instance-incident").first();
    await incident.waitFor().catch(() => {
      throw new Error("the instance page shows no incident");
    });
    const marked = admin.locator("[data-testid=bpmn-canvas] svg g.fd-incident");
    await marked.first().waitFor().catch(async () => {
      const err = await admin.getByTestId("bpmn-error").innerText().catch(() => "no error shown");
      throw new Error(`no element is marked with the incident on the diagram: ${err}`);
    });
    await shot(admin, "processes-08-incident");
    await incident.getByTestId("incident-retry").click();
    await waitForState(admin, "completed");
    if ((await admin.getByTestId("instance-incident").count()) > 0) throw new Error("the incident is still open after the instance completed");
    await shot(admin, "processes-09-retried");
    step("incident retried; the instance completed");
  }

  // 5. S22: the operator finishes the chat, then writes to the client again from the case: a
  // new chat, linked to the case, with a note saying where it came from.
  await op.goto(`${base}/chats/${encodeURIComponent(chatId)}`);
  await op.getByTestId("finish").click();
  await op.getByTestId("finish").waitFor({ state: "detached" }).catch(() => {
    throw new Error("the chat still offers Finish after finishing it");
  });
  await op.goto(`${base}${casePath}`);
  await op.getByTestId("case-start-text").fill("About your parcel: a new one is on its way");
  await op.getByTestId("case-start-chat").click();
  await op.waitForURL((u) => u.pathname.startsWith("/chats/") && !u.pathname.endsWith(encodeURIComponent(chatId)), { timeout: 15000 }).catch(async () => {
    const err = await op.getByTestId("case-start-error").innerText().catch(() => "no error shown");
    throw new Error(`Start chat on the case page did not open a new chat (URL ${op.url()}): ${err}`);
  });
  await op.getByTestId("chat-case-link").waitFor().catch(() => {
    throw new Error("the chat started from the case does not link to it");
  });
  await op.getByTestId("msg-outbound").filter({ hasText: "a new one is on its way" }).first().waitFor().catch(() => {
    throw new Error("the chat started from the case does not show the operator's first message");
  });
  await op.getByText(/Chat started from case #\d+/).first().waitFor().catch(() => {
    throw new Error('the new chat has no note "Chat started from case #…"');
  });
  await shot(op, "processes-10-start-chat");
  step("Start chat from the case: a new chat linked to the case, with the first message and the note");

  ok = true;
  console.log("PASS processes ok");
} catch (e) {
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: `${shots}/processes-failure-${i}.png`, fullPage: true }).catch(() => {});
  }
  console.log("FAIL " + String(e?.message ?? e).split("\n")[0]);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
