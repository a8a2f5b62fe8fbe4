// A stand-in for the `vscode` module, enough for the extension's activate() outside VS Code
// (tests/e2e/vscode_unit.cjs): settings come from globalThis.SCENARIO.settings, and what the
// extension shows the user (messages, the status bar item) is recorded in `recorded`.
"use strict";
const recorded = { messages: [], statusItem: undefined, commands: {} };
const settings = () => (globalThis.SCENARIO && globalThis.SCENARIO.settings) || {};
const disposable = { dispose() {} };
const event = () => () => disposable;

class EventEmitter {
  constructor() {
    this.event = event();
  }
  fire() {}
  dispose() {}
}
class MarkdownString {
  constructor(value) {
    this.value = value || "";
  }
  appendMarkdown(text) {
    this.value += text;
    return this;
  }
}
class ThemeColor {
  constructor(id) {
    this.id = id;
  }
}
const Uri = {
  file: (p) => ({ scheme: "file", fsPath: p, toString: () => `file://${p}` }),
  parse: (s) => ({ scheme: s.split(":")[0], fsPath: s, toString: () => s }),
  from: (parts) => ({ ...parts, toString: () => `${parts.scheme}:${parts.path}` }),
};
const message = (level) => (text, ...items) => {
  recorded.messages.push({ level, text: String(text), items: items.filter((i) => typeof i === "string") });
  return Promise.resolve(undefined);
};

module.exports = {
  recorded,
  EventEmitter,
  MarkdownString,
  ThemeColor,
  Uri,
  StatusBarAlignment: { Left: 1, Right: 2 },
  ProgressLocation: { Notification: 15 },
  ConfigurationTarget: { Global: 1, Workspace: 2, WorkspaceFolder: 3 },
  window: {
    activeTextEditor: undefined,
    createOutputChannel: () => ({
      info() {}, warn() {}, error() {}, debug() {}, trace() {}, append() {}, appendLine() {}, show() {}, dispose() {},
    }),
    createStatusBarItem: () => {
      recorded.statusItem = { text: "", tooltip: undefined, command: undefined, show() {}, dispose() {} };
      return recorded.statusItem;
    },
    onDidChangeActiveTextEditor: event(),
    onDidChangeTextEditorSelection: event(),
    showErrorMessage: message("error"),
    showWarningMessage: message("warning"),
    showInformationMessage: message("info"),
    withProgress: (_options, task) => task({ report() {} }, { isCancellationRequested: false, onCancellationRequested: event() }),
    showQuickPick: () => Promise.resolve(undefined),
  },
  workspace: {
    // SCENARIO.folder (a path): one open workspace folder, as in a window with a folder open
    workspaceFolders: globalThis.SCENARIO.folder
      ? [{ uri: Uri.file(globalThis.SCENARIO.folder), name: "ws", index: 0 }]
      : undefined,
    workspaceFile: undefined,
    getConfiguration: () => ({
      get: (key, fallback) => (key in settings() ? settings()[key] : fallback),
      update: () => Promise.resolve(),
    }),
    getWorkspaceFolder: () => undefined,
    onDidChangeConfiguration: event(),
    registerTextDocumentContentProvider: () => disposable,
    openTextDocument: () => Promise.resolve({}),
  },
  languages: { match: () => 0, setTextDocumentLanguage: () => Promise.resolve() },
  commands: {
    registerCommand: (id, callback) => {
      recorded.commands[id] = callback;
      return disposable;
    },
    executeCommand: (id, ...args) => Promise.resolve(recorded.commands[id] && recorded.commands[id](...args)),
  },
};
