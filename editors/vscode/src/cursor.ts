// Tells the server where the cursor rests (`titans/cursor`), so it can pre-fill the completion
// prompt for that place in the background and the first keystroke's request starts warm.
import * as vscode from "vscode";
import { LanguageClient, State } from "vscode-languageclient/node";

export const CURSOR_NOTIFICATION = "titans/cursor";
/** The cursor has rested when it has not moved for this long. */
export const REST_MS = 250;

/** Params of `titans/cursor`: the document and the cursor's LSP position (UTF-16 characters). */
export interface CursorParams {
  textDocument: { uri: string };
  position: { line: number; character: number };
}

/**
 * Sends `titans/cursor` once the cursor of the active editor has rested REST_MS after a move, after
 * a focus change, or after the client started. Only for documents the client serves, an empty
 * selection, a running client, and while `titansLsp.prewarm` is on. One per client: dispose it
 * with the client.
 */
export class CursorReporter implements vscode.Disposable {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly disposables: vscode.Disposable[];

  constructor(
    private readonly client: LanguageClient,
    private readonly selector: vscode.DocumentSelector,
  ) {
    this.disposables = [
      vscode.window.onDidChangeTextEditorSelection((event) => {
        if (event.textEditor === vscode.window.activeTextEditor) {
          this.schedule();
        }
      }),
      vscode.window.onDidChangeActiveTextEditor(() => this.schedule()),
      client.onDidChangeState((event) => {
        if (event.newState === State.Running) {
          this.schedule(); // the file that was open before the server came up
        }
      }),
    ];
  }

  /** (Re)starts the rest timer: only the last move of a burst is sent. */
  schedule(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.send();
    }, REST_MS);
  }

  /** The params for the active editor, or undefined when the server has nothing to do there. */
  private params(): CursorParams | undefined {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !editor.selection.isEmpty || vscode.languages.match(this.selector, editor.document) === 0) {
      return undefined;
    }
    if (!vscode.workspace.getConfiguration("titansLsp", editor.document.uri).get<boolean>("prewarm", true)) {
      return undefined;
    }
    const converter = this.client.code2ProtocolConverter;
    return {
      textDocument: { uri: converter.asUri(editor.document.uri) },
      position: converter.asPosition(editor.selection.active),
    };
  }

  private send(): void {
    if (this.client.state !== State.Running) {
      return;
    }
    const params = this.params();
    if (params) {
      // A failed send (the server just went away) only costs the next request its warm start.
      this.client.sendNotification(CURSOR_NOTIFICATION, params).catch(() => undefined);
    }
  }

  dispose(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.disposables.forEach((d) => d.dispose());
  }
}
