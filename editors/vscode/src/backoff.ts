// Restart the server after a crash, waiting longer after each crash in a row, and tell the user.
import * as vscode from "vscode";
import { CloseAction, CloseHandlerResult, ErrorAction, ErrorHandler, ErrorHandlerResult } from "vscode-languageclient/node";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
const MAX_RESTARTS = 5;
/** A server that stayed up this long is healthy again: the back-off starts over. */
const STABLE_MS = 60000;

export class BackoffErrorHandler implements ErrorHandler {
  private crashes = 0;
  private startedAt = Date.now();
  /** Set while the user or the extension stops the server on purpose. */
  stopping = false;

  constructor(
    private readonly log: vscode.OutputChannel,
    private readonly onGiveUp: () => void,
    private readonly onRestarting: () => void,
    /** The server's own one-line error, if it wrote one before stopping (e.g. a model it cannot load). */
    private readonly serverError: () => string | undefined = () => undefined,
  ) {}

  /** Called when the server (re)started successfully. */
  started(): void {
    this.startedAt = Date.now();
  }

  error(_error: Error, _message: unknown, count: number | undefined): ErrorHandlerResult {
    // A few broken messages are survivable; a stream of them means the connection is gone.
    return { action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown };
  }

  async closed(): Promise<CloseHandlerResult> {
    if (this.stopping) {
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    if (Date.now() - this.startedAt > STABLE_MS) {
      this.crashes = 0;
    }
    this.crashes += 1;
    const why = this.serverError();
    const said = why ? ` It said: ${why}` : "";
    if (this.crashes > MAX_RESTARTS) {
      this.onGiveUp();
      void vscode.window
        .showErrorMessage(
          `Titans LSP: the server crashed ${MAX_RESTARTS} times in a row and was not restarted.${said}`,
          "Show server log",
          "Restart server",
        )
        .then((choice) => {
          if (choice === "Show server log") {
            this.log.show(true);
          } else if (choice === "Restart server") {
            void vscode.commands.executeCommand("titansLsp.restartServer");
          }
        });
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (this.crashes - 1));
    const message = `Titans LSP: the server stopped unexpectedly; restarting in ${Math.round(delay / 1000)} s (attempt ${this.crashes} of ${MAX_RESTARTS}).${said}`;
    this.log.appendLine(message);
    this.onRestarting();
    void vscode.window.showWarningMessage(message, "Show server log").then((choice) => {
      if (choice) {
        this.log.show(true);
      }
    });
    await new Promise((resolve) => setTimeout(resolve, delay));
    return { action: CloseAction.Restart, handled: true };
  }

  /** A deliberate restart by the user: forget past crashes. */
  reset(): void {
    this.crashes = 0;
  }
}
