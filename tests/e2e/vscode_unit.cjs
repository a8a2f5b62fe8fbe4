// Runs the packaged extension's activate() against stand-ins for `vscode` and the language client
// (tests/e2e/vscode_stubs, on NODE_PATH), in seconds, for what the real editor test is too slow to
// cover: a settings value of the wrong type, a server that never answers, the status item after an
// error. Timers are cut to at most 50 ms, so timeouts and back-offs pass quickly.
// Input (environment): OUT_DIR (the extension's compiled out/), SCENARIO (JSON: settings, start,
// request, commands to run after activation). Output (stdout): one JSON object of what the user saw.
"use strict";
const path = require("path");

const realSetTimeout = setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => realSetTimeout(fn, Math.min(ms || 0, 50), ...args);
const sleep = (ms) => new Promise((resolve) => realSetTimeout(resolve, ms));
const within = (promise, ms) => Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);

globalThis.SCENARIO = JSON.parse(process.env.SCENARIO);
const vscode = require("vscode");
const extension = require(path.join(process.env.OUT_DIR, "extension.js"));

(async () => {
  const result = { activated: false, commandsFinished: [], error: null };
  try {
    result.activated = await within(extension.activate({ subscriptions: [] }), 2000);
    for (const command of globalThis.SCENARIO.commands || []) {
      if (await within(vscode.commands.executeCommand(command), 2000)) {
        result.commandsFinished.push(command);
      }
    }
    await sleep(300);
  } catch (error) {
    result.error = String(error && error.stack ? error.stack : error);
  }
  const item = vscode.recorded.statusItem || {};
  result.messages = vscode.recorded.messages;
  result.status = { text: item.text, command: item.command, tooltip: item.tooltip && item.tooltip.value };
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
})();
