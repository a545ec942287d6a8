// What every browser script shares: Debian's Chromium with the flags this machine needs, the
// "step …" log lines the Rust side echoes, screenshots, and signing in through the login page.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

export const shots = process.env.SHOTS || "artifacts";
mkdirSync(shots, { recursive: true });

export const step = (s) => console.log("step " + s);

export const shot = (page, name) =>
  page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

/** Fails the script (FAIL line, exit 1) when any of the named environment variables is empty. */
export function requireEnv(vars) {
  const missing = Object.entries(vars)
    .filter(([, v]) => !v)
    .map(([k]) => k);
  if (missing.length > 0) {
    console.log(`FAIL missing environment: ${missing.join(", ")}`);
    process.exit(1);
  }
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/**
 * Fails the script when the page reports a Content-Security-Policy violation: the server's
 * policy must allow everything the web app and the widget really load.
 */
export function watchCsp(page) {
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) {
      console.log("FAIL CSP violation: " + m.text().split("\n")[0]);
      process.exit(1);
    }
  });
}

/** A fresh browser context signed in as `user` on the app at `base`. */
export async function signIn(browser, base, user, pw) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  watchCsp(page);
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/login`);
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(pw);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("logout").waitFor();
  return page;
}
