// Titans LSP for VS Code: starts `titans-lsp serve --stdio`, shows its inline completions for Python,
// and gives the user a status bar item and commands for the server's modes and memory.
import * as net from "net";
import * as readline from "readline";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  StdioOptions,
  TransportKind,
} from "vscode-languageclient/node";
import { BackoffErrorHandler } from "./backoff";
import { CursorReporter } from "./cursor";
import { authToken, RESTART_SETTINGS, resolveServerCommand, serverAddress, SettingError } from "./serverCommand";
import { StatusBar, TitansStatus } from "./status";

const MODES: { mode: string; detail: string }[] = [
  { mode: "none", detail: "In-file context only" },
  { mode: "concat", detail: "Retrieved cross-file snippets in the prompt" },
  { mode: "memory", detail: "Cross-file context written into Titans neural memory" },
  { mode: "ablation", detail: "Memory module present but not written" },
  { mode: "hybrid", detail: "Snippets in the prompt, the rest in memory" },
];

/** The languages the server reads with a grammar (titans_lsp/retrieval/languages.py); package.json's
 * activationEvents name the same ones (a test keeps them in sync). */
const LANGUAGES = [
  "python", "typescript", "typescriptreact", "javascript", "javascriptreact", "java", "go", "rust", "csharp", "c", "cpp",
];

/** The documents the server completes in. */
const DOCUMENT_SELECTOR = LANGUAGES.flatMap((language) => [
  { scheme: "file", language },
  { scheme: "untitled", language },
]);

/** A server that has not answered `initialize` by then is stuck, or still loading its model: the user is told. */
const START_NOTICE_MS = 60000;

/** The status answers at once from a healthy server: longer means it is stuck, and the user is told. */
const STATUS_TIMEOUT_MS = 20000;

let client: LanguageClient | undefined;
/** The CLI's one-line error ("titans-lsp serve: error: ...", titans_lsp/cli.py): why a server stopped at start. */
const SERVER_ERROR_LINE = /^titans-lsp \S+: error: /;
/** The last such line the server wrote since it last came up; the crash messages quote it. */
let lastServerError: string | undefined;
/** The most of that line a pop-up quotes (a huge line stays whole in the log). */
const MAX_QUOTED_ERROR = 300;
let cursorReporter: CursorReporter | undefined;
let errorHandler: BackoffErrorHandler;
let statusBar: StatusBar;
let log: vscode.LogOutputChannel;

/** Start `titans-lsp serve --stdio`, or connect to a server listening on titansLsp.serverAddress. */
function makeServerOptions(): ServerOptions {
  const address = serverAddress();
  if (address) {
    log.info(`Connecting to the server at ${address.host}:${address.port} (titansLsp.serverAddress)`);
    return () =>
      new Promise((resolve, reject) => {
        const socket = net.connect(address.port, address.host);
        socket.once("connect", () => resolve({ reader: socket, writer: socket }));
        socket.once("error", reject);
      });
  }
  const server = resolveServerCommand();
  log.info(`Starting ${server.command} ${server.args.join(" ")} (from ${server.source})`);
  return {
    command: server.command,
    args: server.args,
    transport: TransportKind.stdio,
    options: { cwd: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath },
  };
}

/** The server's output goes to the log, as the client's default does; its one-line error is also kept
 * for the crash message, so the user sees why without opening the log. */
function serverStdio(): Required<StdioOptions> {
  const lines = (input: NodeJS.ReadableStream) => readline.createInterface({ input, crlfDelay: Infinity, terminal: false });
  return {
    stdout: (input, channel) => lines(input).on("line", (line) => channel.info(line)),
    stderr: (input, channel) =>
      lines(input).on("line", (line) => {
        channel.error(line);
        if (SERVER_ERROR_LINE.test(line)) {
          lastServerError = line.length > MAX_QUOTED_ERROR ? `${line.slice(0, MAX_QUOTED_ERROR - 1)}…` : line;
        }
      }),
  };
}

function makeClient(): LanguageClient {
  const serverOptions = makeServerOptions();
  const config = vscode.workspace.getConfiguration("titansLsp");
  const clientOptions: LanguageClientOptions = {
    documentSelector: DOCUMENT_SELECTOR,
    // Pushes workspace/didChangeConfiguration when a titansLsp setting changes; the server pulls
    // per-folder values with workspace/configuration.
    synchronize: { configurationSection: "titansLsp" },
    initializationOptions: {
      model: config.get<string>("model") || undefined,
      device: config.get<string>("device") || undefined,
      dtype: config.get<string>("dtype") || undefined,
      // One backend per server process (not per folder): window settings, changing one restarts the server.
      backend: config.get<string>("backend") || undefined,
      backendUrl: config.get<string>("backendUrl") || undefined,
      backendModel: config.get<string>("backendModel") || undefined,
      backendApiKeyEnv: config.get<string>("backendApiKeyEnv") || undefined,
      backendThreads: config.get<number>("backendThreads") || undefined,
      // Only to a server we connect to (titansLsp.serverAddress) that was started with --auth-token-file.
      authToken: serverAddress() ? authToken() : undefined,
    },
    outputChannel: log,
    errorHandler,
    stdioOptions: serverStdio(),
  };
  const newClient = new LanguageClient("titansLsp", "Titans LSP", serverOptions, clientOptions);
  newClient.onDidChangeState((event) => {
    if (event.newState === State.Running) {
      lastServerError = undefined;
      errorHandler.started();
      statusBar.setState("running");
    } else if (event.newState === State.Starting) {
      statusBar.setState("starting");
    } else {
      statusBar.setState("stopped");
    }
  });
  newClient.onNotification("titans/status", (params: TitansStatus) => statusBar.update(params));
  return newClient;
}

/** The language client's words when the server's program could not be run (not found, not executable). */
const LAUNCH_FAILED = /Launching server using|ENOENT|EACCES/;

/** Tell the user the server could not start, and why; the status item shows it failed. */
function startFailed(error: unknown): void {
  statusBar.setState("failed");
  let reason = error instanceof Error ? error.message : String(error);
  log.error(`Could not start the server: ${reason}`);
  const launch = LAUNCH_FAILED.test(reason);
  if (launch) {
    reason += "; set titansLsp.serverCommand (or titansLsp.pythonPath) to the titans-lsp of your environment";
  }
  const actions = error instanceof SettingError || launch ? ["Open settings", "Show server log"] : ["Show server log"];
  // Not awaited: activation and the commands must not wait for the user to close the message.
  void vscode.window.showErrorMessage(`Titans LSP: could not start the server: ${reason}`, ...actions).then((choice) => {
    if (choice === "Open settings") {
      void vscode.commands.executeCommand("workbench.action.openSettings", "titansLsp");
    } else if (choice) {
      log.show(true);
    }
  });
}

async function startClient(): Promise<void> {
  try {
    client = makeClient(); // reads the settings: one of the wrong type throws a SettingError
  } catch (error) {
    startFailed(error);
    return;
  }
  cursorReporter = new CursorReporter(client, DOCUMENT_SELECTOR);
  const starting = client;
  const notice = setTimeout(() => {
    if (client === starting && starting.state === State.Starting) {
      const message = `Titans LSP: the server has not answered after ${START_NOTICE_MS / 1000} s; it may still be loading its model.`;
      log.warn(message);
      void vscode.window.showWarningMessage(message, "Show server log").then((choice) => {
        if (choice) {
          log.show(true);
        }
      });
    }
  }, START_NOTICE_MS);
  try {
    await client.start();
  } catch (error) {
    startFailed(error);
  } finally {
    clearTimeout(notice);
  }
}

async function stopClient(): Promise<void> {
  cursorReporter?.dispose();
  cursorReporter = undefined;
  if (!client) {
    return;
  }
  errorHandler.stopping = true;
  try {
    if (client.state !== State.Stopped) {
      await client.stop();
    }
  } catch {
    // A server that is already gone cannot be stopped politely.
  } finally {
    errorHandler.stopping = false;
    client = undefined;
  }
}

async function restartClient(): Promise<void> {
  errorHandler.reset();
  await stopClient();
  await startClient();
}

/** An error message with a button to the server log (not awaited: nothing waits for the user). */
function errorWithLog(message: string): void {
  log.error(message);
  void vscode.window.showErrorMessage(message, "Show server log").then((choice) => {
    if (choice) {
      log.show(true);
    }
  });
}

/** Stands for "no answer in time" in the race against a server command's answer. */
const TIMED_OUT = Symbol("timed out");

/**
 * Runs one of the server's workspace/executeCommand commands (ids `titans-lsp.*`). When the server
 * is not running, answers with an error, or gives no answer within `timeoutMs` (unset: it waits,
 * cancellable through `token`), the user is told and the result is undefined: a command never
 * waits forever on a stuck server, nor fails without a word.
 */
async function serverCommand(
  command: string,
  options: { timeoutMs?: number; token?: vscode.CancellationToken } = {},
): Promise<unknown> {
  if (!client || client.state !== State.Running) {
    void vscode.window.showWarningMessage("Titans LSP: the server is not running.");
    return undefined;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => resolve(TIMED_OUT), options.timeoutMs);
    }
  });
  try {
    const answer = await Promise.race([
      client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] }, options.token),
      deadline,
    ]);
    if (answer === TIMED_OUT) {
      errorWithLog(`Titans LSP: the server did not answer ${command} within ${(options.timeoutMs ?? 0) / 1000} s.`);
      return undefined;
    }
    return answer;
  } catch (error) {
    errorWithLog(`Titans LSP: ${command} failed: ${error instanceof Error ? error.message : String(error)}`);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

async function switchMode(): Promise<void> {
  const folder = statusBar.activeFolder();
  if (!folder) {
    void vscode.window.showWarningMessage("Titans LSP: open a folder to choose its completion mode.");
    return;
  }
  const current = vscode.workspace.getConfiguration("titansLsp", folder.uri).get<string>("mode", "concat");
  const picked = await vscode.window.showQuickPick(
    MODES.map(({ mode, detail }) => ({
      label: mode,
      description: mode === current ? "(current)" : undefined,
      detail,
    })),
    { title: `Titans LSP completion mode for ${folder.name}`, placeHolder: current },
  );
  if (!picked || picked.label === current) {
    return;
  }
  // One folder: the workspace settings; several: that folder's own settings.
  const target = vscode.workspace.workspaceFile
    ? vscode.ConfigurationTarget.WorkspaceFolder
    : vscode.ConfigurationTarget.Workspace;
  await vscode.workspace.getConfiguration("titansLsp", folder.uri).update("mode", picked.label, target);
}

/** Read-only documents for the server's status (closing them never asks to save). */
const STATUS_SCHEME = "titans-lsp-status";
const statusContent = new Map<string, string>();
const statusChanged = new vscode.EventEmitter<vscode.Uri>();
const statusProvider: vscode.TextDocumentContentProvider = {
  onDidChange: statusChanged.event,
  provideTextDocumentContent: (uri) => statusContent.get(uri.toString()) ?? "",
};

async function showStatus(): Promise<void> {
  const result = await serverCommand("titans-lsp.status", { timeoutMs: STATUS_TIMEOUT_MS });
  if (result === undefined) {
    return;
  }
  const uri = vscode.Uri.from({ scheme: STATUS_SCHEME, path: "/titans-lsp status.json" });
  statusContent.set(uri.toString(), JSON.stringify(result, null, 2));
  statusChanged.fire(uri);
  const document = await vscode.workspace.openTextDocument(uri);
  await vscode.languages.setTextDocumentLanguage(document, "json");
  await vscode.window.showTextDocument(document, { preview: true });
}

/** A long server command (priming a large workspace takes minutes): a progress notification the
 * user can cancel, which cancels the request, instead of a spinner that may never end. */
function withProgress(title: string, command: string): () => Promise<void> {
  return async () => {
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title, cancellable: true },
      async (_progress, token) => {
        await serverCommand(command, { token });
      },
    );
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  log = vscode.window.createOutputChannel("Titans LSP", { log: true });
  statusBar = new StatusBar();
  errorHandler = new BackoffErrorHandler(
    log,
    () => statusBar.setState("failed"),
    () => statusBar.setState("restarting"),
    () => lastServerError,
  );
  context.subscriptions.push(
    log,
    statusBar,
    statusChanged,
    vscode.workspace.registerTextDocumentContentProvider(STATUS_SCHEME, statusProvider),
    vscode.commands.registerCommand("titansLsp.switchMode", switchMode),
    vscode.commands.registerCommand("titansLsp.primeWorkspace", withProgress("Titans LSP: priming memory", "titans-lsp.primeWorkspace")),
    vscode.commands.registerCommand("titansLsp.resetMemory", withProgress("Titans LSP: resetting memory", "titans-lsp.resetMemory")),
    vscode.commands.registerCommand("titansLsp.showStatus", showStatus),
    vscode.commands.registerCommand("titansLsp.showServerLog", () => log.show(true)),
    vscode.commands.registerCommand("titansLsp.restartServer", restartClient),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (RESTART_SETTINGS.some((setting) => event.affectsConfiguration(setting))) {
        log.info("Server settings changed: restarting the server.");
        void restartClient();
      }
    }),
  );
  // Not awaited: a server that never answers must not hold activation, and with it every titansLsp command.
  void startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}
