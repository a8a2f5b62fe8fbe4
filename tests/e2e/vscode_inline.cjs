// Drives a real VS Code (code-server) in headless Chromium as a user would:
// open main.py, type, wait for the ghost text of an inline suggestion, accept it with Tab, then
// switch titansLsp.mode with the status bar item's quick pick and read the server's status.
// Then it types a second line and does not take its suggestion (Escape, then a key that does not
// follow it: the server records it dismissed), moves the cursor and reads the server's last
// pre-warm (titans/cursor) from its status,
// and completes a new line in report.ts (TypeScript) the same way.
// Run by tests/test_editor_vscode.py (playwright-core comes from NODE_PATH, set by the test).
// Last, it kills the server process and watches the extension restart it.
// Input (environment): URL, FOLDER, SCREENSHOT_DIR, RESULT, CHROMIUM, TYPED, NEW_MODE,
// SERVER_MARK (a string only the server's command line contains: how the script finds its pid),
// TS_TYPED, TS_LINE (what to type in report.ts, below which line), DISMISS_TYPED (the line whose
// suggestion is dismissed).
// Output: a JSON file at RESULT with what was seen; screenshots in SCREENSHOT_DIR.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`missing environment variable ${name}`);
  }
  return value;
};
const URL = env("URL");
const FOLDER = env("FOLDER");
const SCREENSHOT_DIR = env("SCREENSHOT_DIR");
const RESULT = env("RESULT");
const TYPED = env("TYPED");
const NEW_MODE = env("NEW_MODE");
const SERVER_MARK = env("SERVER_MARK");
const TS_TYPED = env("TS_TYPED");
const TS_LINE = Number(env("TS_LINE")); // 1-based line of report.ts after which a new line is typed
const DISMISS_TYPED = env("DISMISS_TYPED");
const result = { steps: [], timings: {} };
const t0 = Date.now();
const step = (name) => {
  result.steps.push(name);
  result.timings[name] = (Date.now() - t0) / 1000;
  console.log(`[${result.timings[name].toFixed(1)}s] ${name}`);
};
const save = () => fs.writeFileSync(RESULT, JSON.stringify(result, null, 2));

/** Text of the lines of the active editor, in order (VS Code renders spaces as U+00A0). */
async function editorLines(page) {
  return page.$$eval(".editor-group-container.active .monaco-editor .view-lines .view-line", (lines) =>
    lines
      .map((el) => ({ top: parseFloat(el.style.top || "0"), text: el.textContent.replace(/\u00a0/g, " ") }))
      .sort((a, b) => a.top - b.top)
      .map((l) => l.text),
  );
}

async function ghostText(page) {
  return page.$$eval(".editor-group-container.active .monaco-editor .ghost-text, .editor-group-container.active .monaco-editor .ghost-text-decoration", (els) =>
    els.map((el) => el.textContent.replace(/\u00a0/g, " ")).join(""),
  );
}

async function waitFor(what, probe, timeoutMs, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value) {
      return value;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
}

async function runCommand(page, title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: 15000 });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: 15000 });
  await page.keyboard.press("Enter");
}

/** Runs "Titans LSP: Show server status" and returns the JSON document it opens. The document can be
 * longer than the screen (the editor renders only visible lines), so its text comes through the
 * clipboard: Select All, Copy, as a user would. */
async function serverStatus(page) {
  await runCommand(page, "Titans LSP: Show server status");
  await page.locator(".tabs-container .tab", { hasText: "titans-lsp status.json" }).first().waitFor({ timeout: 30000 });
  const text = await waitFor(
    "the server status document",
    async () => {
      await page.evaluate(() => navigator.clipboard.writeText(""));
      await page.keyboard.press("Control+A");
      await page.keyboard.press("Control+C");
      const copied = await page.evaluate(() => navigator.clipboard.readText());
      try {
        return JSON.stringify(JSON.parse(copied));
      } catch {
        return null;
      }
    },
    30000,
    500,
  );
  // Close the status document again so the next step sees main.py.
  await page.keyboard.press("Control+W");
  return JSON.parse(text);
}

/** Process ids whose command line contains SERVER_MARK (the server the extension started). */
function serverPids() {
  const pids = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) {
      continue;
    }
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes(SERVER_MARK) && cmdline.includes("serve")) {
        pids.push(Number(entry));
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

async function notificationsText(page) {
  return page.$$eval(".notification-list-item-message", (els) =>
    els.map((el) => el.textContent).join("\n"),
  );
}

/** The active editor's cursor from VS Code's own status bar item ("Ln 7, Col 12"; 1-based). */
async function cursorPosition(page) {
  const item = page.locator(".statusbar-item", { hasText: /Ln \d+, Col \d+/ }).first();
  const match = (await item.count()) ? /Ln (\d+), Col (\d+)/.exec(await item.textContent()) : null;
  return match ? { line: Number(match[1]), column: Number(match[2]) } : null;
}

async function statusBarText(page) {
  const item = page.locator(".statusbar-item", { hasText: "Titans:" }).first();
  return (await item.count()) ? (await item.textContent()).trim() : "";
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: URL });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.log(`page error: ${err.message}`));
  try {
    await page.goto(`${URL}/?folder=${encodeURIComponent(FOLDER)}`);
    await page.waitForSelector(".monaco-workbench", { timeout: 90000 });
    step("workbench loaded");

    // Open main.py with Quick Open, as a user would.
    await waitFor("the explorer to list main.py", async () => (await page.locator(".explorer-folders-view .monaco-list-row", { hasText: "main.py" }).count()) > 0, 60000);
    await page.locator(".explorer-folders-view .monaco-list-row", { hasText: "main.py" }).first().click();
    await page.locator(".tabs-container .tab", { hasText: "main.py" }).first().waitFor({ timeout: 30000 });
    await waitFor("main.py in the editor", async () => (await editorLines(page)).some((l) => l.includes("def report")), 30000);
    step("main.py open");

    // The extension activates on Python files; wait until its server is running.
    result.statusBarAtStart = await waitFor(
      "the Titans status bar item to show a running server",
      async () => {
        const text = await statusBarText(page);
        if (/failed|stopped/.test(text)) {
          throw new Error(`the server did not start: status bar says "${text}" (see the Titans LSP output log)`);
        }
        return text && !/starting/.test(text) ? text : null;
      },
      180000,
    );
    step("server running");

    // Type at the end of the function body: a new (auto-indented) line, then some code.
    await page.locator(".editor-group-container.active .monaco-editor .view-lines").click();
    await page.keyboard.press("Control+End");
    await page.keyboard.press("Backspace"); // onto the end of the last line of report()
    await page.keyboard.press("Enter");
    await page.keyboard.type(TYPED, { delay: 40 });
    step("typed");
    result.lineBeforeAccept = (await editorLines(page)).filter((l) => l.trim()).pop();

    // The first suggestion waits for the model to load (tens of seconds on a busy 2-core machine).
    let ghost = await waitFor("ghost text", () => ghostText(page), 90000).catch(() => "");
    if (!ghost) {
      // Fall back to asking explicitly (Alt+\ is VS Code's "Trigger Inline Suggestion").
      result.explicitTrigger = true;
      await page.keyboard.press("Alt+Backslash");
      ghost = await waitFor("ghost text after Alt+\\", () => ghostText(page), 90000);
    }
    result.ghost = ghost;
    result.linesWithGhost = await editorLines(page);
    step("ghost text shown");
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "vscode-ghost-text.png") });

    // Accept it with Tab: the text becomes part of the document and the ghost goes away.
    await page.keyboard.press("Tab");
    await waitFor("the ghost text to be accepted", async () => !(await ghostText(page)), 10000);
    result.linesAfterAccept = await editorLines(page);
    step("accepted with Tab");
    await page.keyboard.press("Escape");
    // The accept ran the item's command (titans-lsp.accepted); the status bar shows today's rate.
    result.statusBarAfterAccept = await waitFor(
      "the status bar to show today's acceptance",
      async () => {
        const text = await statusBarText(page);
        return /accepted/.test(text) ? text : null;
      },
      30000,
    ).catch(() => statusBarText(page));

    // A suggestion the user does not take: a new line, its ghost text, Escape, then a key that does
    // not follow the suggestion. The next request for the document dismisses it.
    await page.keyboard.press("End");
    await page.keyboard.press("Enter");
    await page.keyboard.type(DISMISS_TYPED, { delay: 40 });
    let dismissed = await waitFor("a second ghost text", () => ghostText(page), 90000).catch(() => "");
    if (!dismissed) {
      await page.keyboard.press("Alt+Backslash");
      dismissed = await waitFor("a second ghost text after Alt+\\", () => ghostText(page), 90000);
    }
    await new Promise((r) => setTimeout(r, 1000)); // the answer to the last key settles
    result.dismissedGhost = (await ghostText(page)) || dismissed;
    await page.keyboard.press("Escape");
    await page.keyboard.type(result.dismissedGhost.startsWith("@") ? "!" : "@");
    await new Promise((r) => setTimeout(r, 1500)); // the request that dismisses it goes out
    await page.keyboard.press("Escape");
    step("second suggestion dismissed");

    // Move the cursor two lines up without typing and let it rest: the extension sends
    // titans/cursor and the server pre-warms the prompt there (its status reports lastPrepare).
    const beforeMove = await waitFor("the cursor position", () => cursorPosition(page), 10000);
    await page.keyboard.press("ArrowUp");
    await page.keyboard.press("ArrowUp");
    result.cursorAfterMove = await waitFor(
      "the cursor to move up",
      async () => {
        const now = await cursorPosition(page);
        return now && now.line === beforeMove.line - 2 ? now : null;
      },
      10000,
    );
    const prepareDeadline = Date.now() + 60000;
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const prepared = (await serverStatus(page)).lastPrepare;
      if ((prepared && prepared.line === result.cursorAfterMove.line - 1) || Date.now() > prepareDeadline) {
        result.lastPrepare = prepared;
        break;
      }
    }
    step("pre-warmed at the resting cursor");

    // A TypeScript file of the same workspace: open report.ts, type a new line in report(), accept.
    await page.locator(".explorer-folders-view .monaco-list-row", { hasText: "report.ts" }).first().click();
    await page.locator(".tabs-container .tab", { hasText: "report.ts" }).first().waitFor({ timeout: 30000 });
    await waitFor("report.ts in the editor", async () => (await editorLines(page)).some((l) => l.includes("circleArea(width)")), 30000);
    await page.locator(".editor-group-container.active .monaco-editor .view-lines").click();
    await page.keyboard.press("Control+Home");
    for (let i = 1; i < TS_LINE; i += 1) {
      await page.keyboard.press("ArrowDown");
    }
    await page.keyboard.press("End");
    await page.keyboard.press("Enter");
    await page.keyboard.type(TS_TYPED, { delay: 40 });
    result.tsLineBeforeAccept = (await editorLines(page))[TS_LINE];
    let tsGhost = await waitFor("ghost text in report.ts", () => ghostText(page), 90000).catch(() => "");
    if (!tsGhost) {
      result.tsExplicitTrigger = true;
      await page.keyboard.press("Alt+Backslash");
      tsGhost = await waitFor("ghost text in report.ts after Alt+\\", () => ghostText(page), 90000);
    }
    result.tsGhost = tsGhost;
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "vscode-ghost-text-ts.png") });
    await page.keyboard.press("Tab");
    await waitFor("the TypeScript ghost text to be accepted", async () => !(await ghostText(page)), 10000);
    result.tsLinesAfterAccept = await editorLines(page);
    await page.keyboard.press("Escape");
    result.tsLastCompletion = (await serverStatus(page)).lastCompletion;
    step("TypeScript completion accepted");

    result.statusBeforeModeChange = await serverStatus(page);
    step("status before mode change");

    // Switch mode through the status bar item's quick pick; it writes the workspace setting.
    await page.locator(".statusbar-item", { hasText: "Titans:" }).first().click();
    const input = page.locator(".quick-input-widget input");
    await input.waitFor({ state: "visible", timeout: 15000 });
    await input.fill(NEW_MODE);
    await page.locator(".quick-input-list .monaco-list-row", { hasText: NEW_MODE }).first().waitFor({ timeout: 15000 });
    await page.keyboard.press("Enter");
    step(`picked mode ${NEW_MODE}`);

    // The server hears of it (didChangeConfiguration, then it pulls workspace/configuration).
    const deadline = Date.now() + 60000;
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      result.statusAfterModeChange = await serverStatus(page);
      if (JSON.stringify(result.statusAfterModeChange).includes(`"${NEW_MODE}"`) || Date.now() > deadline) {
        break;
      }
    }
    step("status after mode change");
    result.statusBarAfterModeChange = await statusBarText(page);
    await page.mouse.move(700, 450); // away from the status bar, so its hover closes
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "vscode-after-mode-change.png") });

    // Crash: kill the server; the extension says so and starts a new one.
    const before = serverPids();
    result.killedPids = before;
    if (before.length === 0) {
      throw new Error(`no server process with ${SERVER_MARK} in its command line`);
    }
    before.forEach((pid) => process.kill(pid, "SIGKILL"));
    step("server killed");
    result.crashNotification = await waitFor(
      "the restart notification",
      async () => {
        const text = await notificationsText(page);
        return /restarting in/.test(text) ? text : null;
      },
      30000,
    );
    result.restartedPids = await waitFor(
      "a new server process",
      async () => {
        const pids = serverPids().filter((pid) => !before.includes(pid));
        return pids.length ? pids : null;
      },
      60000,
    );
    result.statusBarAfterRestart = await waitFor(
      "the status bar to show the restarted server",
      async () => {
        const text = await statusBarText(page);
        return text && !/starting|restarting|stopped|failed/.test(text) ? text : null;
      },
      180000,
    );
    step("server restarted");
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "vscode-after-restart.png") });
    result.ok = true;
  } catch (error) {
    result.error = String(error && error.stack ? error.stack : error);
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "vscode-failure.png") }).catch(() => {});
  } finally {
    save();
    await browser.close();
  }
}

main().catch((error) => {
  result.error = String(error);
  save();
  process.exit(1);
});
