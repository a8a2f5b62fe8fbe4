// Decide which command starts the titans-lsp server, and with which arguments.
import * as fs from "fs";
import * as path from "path";
import * as vscode from "vscode";

export interface ServerCommand {
  command: string;
  args: string[];
  /** Where the command came from, for the log. */
  source: string;
}

/** A titansLsp setting that cannot be used as it is (hand-edited settings.json): the message names it and what it needs. */
export class SettingError extends Error {}

function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** `titansLsp.<key>` trimmed ("" when unset); a SettingError naming it when it is not a string. */
export function stringSetting(key: string): string {
  const value = vscode.workspace.getConfiguration("titansLsp").get<unknown>(key);
  if (value === undefined || value === null) {
    return "";
  }
  if (typeof value !== "string") {
    throw new SettingError(`titansLsp.${key} must be a string, got ${shown(value)}`);
  }
  return value.trim();
}

/** `titansLsp.<key>` as a list of strings ([] when unset); a SettingError naming it otherwise: a
 * plain string would be spread into one argument per character, or fail with a TypeError. */
export function stringListSetting(key: string): string[] {
  const value = vscode.workspace.getConfiguration("titansLsp").get<unknown>(key);
  if (value === undefined || value === null) {
    return [];
  }
  if (!Array.isArray(value) || !value.every((part) => typeof part === "string")) {
    throw new SettingError(`titansLsp.${key} must be a list of strings, e.g. ["a", "b"], got ${shown(value)}`);
  }
  return value;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** A workspace folder's own `.venv` (the repository's setup script makes one) holds titans-lsp. */
function findVenvServer(): string | undefined {
  const exe = process.platform === "win32" ? path.join("Scripts", "titans-lsp.exe") : path.join("bin", "titans-lsp");
  for (const folder of vscode.workspace.workspaceFolders ?? []) {
    if (folder.uri.scheme !== "file") {
      continue;
    }
    for (const venv of [".venv", "venv"]) {
      const candidate = path.join(folder.uri.fsPath, venv, exe);
      if (isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}

/**
 * The command, in order of preference: the `titansLsp.serverCommand` setting, a workspace folder's
 * `.venv/bin/titans-lsp`, `titansLsp.pythonPath -m titans_lsp`, then `titans-lsp` on PATH.
 * `serve --stdio` and the window-wide server options are appended.
 */
export function resolveServerCommand(): ServerCommand {
  const serveArgs = ["serve", "--stdio", "--log-level", stringSetting("logLevel") || "info"];
  const model = stringSetting("model");
  if (model) {
    serveArgs.push("--model", model);
  }
  const device = stringSetting("device");
  if (device) {
    serveArgs.push("--device", device);
  }
  const dtype = stringSetting("dtype");
  if (dtype) {
    serveArgs.push("--dtype", dtype);
  }
  serveArgs.push(...stringListSetting("serverArgs"));

  const configured = stringListSetting("serverCommand").filter((part) => part.trim() !== "");
  if (configured.length > 0) {
    return { command: configured[0], args: [...configured.slice(1), ...serveArgs], source: "titansLsp.serverCommand" };
  }
  const venvServer = findVenvServer();
  if (venvServer) {
    return { command: venvServer, args: serveArgs, source: "workspace .venv" };
  }
  const python = stringSetting("pythonPath");
  if (python) {
    return { command: python, args: ["-m", "titans_lsp", ...serveArgs], source: "titansLsp.pythonPath" };
  }
  return { command: "titans-lsp", args: serveArgs, source: "PATH" };
}

/** `titansLsp.serverAddress` as host and port, or undefined when the extension starts its own server. */
export function serverAddress(): { host: string; port: number } | undefined {
  const value = stringSetting("serverAddress");
  const match = /^(.*):(\d+)$/.exec(value);
  if (!match) {
    return undefined;
  }
  return { host: match[1].replace(/^\[|\]$/g, "") || "127.0.0.1", port: Number(match[2]) };
}

/** The token in `titansLsp.authTokenFile` for a server started with `--auth-token-file`; undefined when unset. */
export function authToken(): string | undefined {
  const file = stringSetting("authTokenFile");
  if (!file) {
    return undefined;
  }
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch (error) {
    throw new SettingError(`titansLsp.authTokenFile ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
}

/** Settings whose change needs a new server process (the rest reach the running server). */
export const RESTART_SETTINGS = [
  "titansLsp.serverAddress",
  "titansLsp.authTokenFile",
  "titansLsp.serverCommand",
  "titansLsp.pythonPath",
  "titansLsp.serverArgs",
  "titansLsp.model",
  "titansLsp.device",
  "titansLsp.backend",
  "titansLsp.backendUrl",
  "titansLsp.backendModel",
  "titansLsp.backendApiKeyEnv",
  "titansLsp.backendThreads",
  "titansLsp.dtype",
  "titansLsp.logLevel",
];
