// The status bar item: mode of the active editor's folder, indexing/priming progress, last latency.
import * as vscode from "vscode";

/** Params of the server's `titans/status` notification. */
export interface TitansStatus {
  folder: string;
  mode: string;
  indexing: { done: number; total: number } | null;
  priming: { done: number; total: number } | null;
  lastLatencyMs: number | null;
  /** Which backend answers and whether it is healthy (absent from older servers). */
  backend?: {
    name: string;
    state: string | null;
    model: string | null;
    url: string | null;
    lastError: string | null;
    serving?: string | null; // the backend answering this folder's mode (auto: llamacpp or local)
    reason?: string | null; // auto: why it chose so
  };
  /** Today's accepted / decided suggestions in this folder's mode (absent when titansLsp.telemetry is off). */
  acceptanceToday?: { mode: string; decided: number; accepted: number; rate: number | null };
}

export type ServerState = "starting" | "running" | "restarting" | "stopped" | "failed";

/** The workspace folder a `folder` field names: the server sends a URI; a plain path is accepted too. */
function folderKey(folder: string): string {
  try {
    const uri = folder.includes("://") ? vscode.Uri.parse(folder) : vscode.Uri.file(folder);
    return uri.toString();
  } catch {
    return folder;
  }
}

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly byFolder = new Map<string, TitansStatus>();
  private state: ServerState = "starting";
  private readonly disposables: vscode.Disposable[] = [];

  constructor() {
    this.item = vscode.window.createStatusBarItem("titansLsp.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "Titans LSP";
    this.disposables.push(
      vscode.window.onDidChangeActiveTextEditor(() => this.render()),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration("titansLsp.mode")) {
          this.render();
        }
      }),
    );
    this.render();
    this.item.show();
  }

  setState(state: ServerState): void {
    this.state = state;
    if (state !== "running") {
      this.byFolder.clear();
    }
    this.render();
  }

  update(status: TitansStatus): void {
    this.byFolder.set(folderKey(status.folder), status);
    this.render();
  }

  /** The folder of the active editor, or the first folder. */
  activeFolder(): vscode.WorkspaceFolder | undefined {
    const uri = vscode.window.activeTextEditor?.document.uri;
    return (uri && vscode.workspace.getWorkspaceFolder(uri)) ?? vscode.workspace.workspaceFolders?.[0];
  }

  private render(): void {
    const folder = this.activeFolder();
    const status = folder ? this.byFolder.get(folder.uri.toString()) : undefined;
    const configuredMode = vscode.workspace.getConfiguration("titansLsp", folder?.uri).get<string>("mode", "concat");
    const mode = status?.mode ?? configuredMode;
    const parts = [`Titans: ${mode}`];
    let icon = "$(sparkle)";
    if (status?.indexing && status.indexing.done < status.indexing.total) {
      parts.push(`indexing ${status.indexing.done}/${status.indexing.total}`);
      icon = "$(sync~spin)";
    }
    if (status?.priming && status.priming.done < status.priming.total) {
      parts.push(`priming ${status.priming.done}/${status.priming.total}`);
      icon = "$(sync~spin)";
    }
    if (status?.lastLatencyMs !== null && status?.lastLatencyMs !== undefined) {
      parts.push(`${Math.round(status.lastLatencyMs)} ms`);
    }
    const today = status?.acceptanceToday;
    if (today && today.rate !== null && today.decided > 0) {
      parts.push(`${Math.round(100 * today.rate)}% accepted`);
    }
    this.item.backgroundColor = undefined;
    const serving = status?.backend?.serving ?? status?.backend?.name;
    if (serving && serving !== "local") {
      parts.push(serving);
    }
    if (status?.backend?.state === "loading") {
      icon = "$(loading~spin)";
      parts.push("loading model"); // no completion until it is loaded
    } else if (status?.backend?.lastError) {
      icon = "$(warning)";
      this.item.backgroundColor = new vscode.ThemeColor("statusBarItem.warningBackground");
    }
    if (this.state === "starting" || this.state === "restarting") {
      icon = "$(loading~spin)";
      parts.push(this.state);
    } else if (this.state === "stopped" || this.state === "failed") {
      icon = "$(error)";
      parts.push(this.state);
      this.item.backgroundColor = new vscode.ThemeColor("statusBarItem.errorBackground");
    }
    this.item.text = `${icon} ${parts.join(" · ")}`;
    const tooltip = new vscode.MarkdownString(undefined, true);
    tooltip.appendMarkdown(`**Titans LSP** (${this.state})\n\n`);
    tooltip.appendMarkdown(`Mode: \`${mode}\`${folder ? ` in ${folder.name}` : ""}\n\n`);
    if (status?.backend) {
      const where = status.backend.url ? ` at ${status.backend.url}` : "";
      const via = serving && serving !== status.backend.name ? ` → \`${serving}\`` : "";
      tooltip.appendMarkdown(`Backend: \`${status.backend.name}\`${via} (${status.backend.state ?? "?"})${where}\n\n`);
      if (status.backend.reason) {
        tooltip.appendMarkdown(`${status.backend.reason}\n\n`);
      }
      if (status.backend.lastError) {
        tooltip.appendMarkdown(`Backend error: ${status.backend.lastError}\n\n`);
      }
    }
    if (today && today.decided > 0) {
      tooltip.appendMarkdown(`Accepted today in \`${today.mode}\`: ${today.accepted} of ${today.decided} suggestions\n\n`);
    }
    if (status?.indexing) {
      tooltip.appendMarkdown(`Indexed ${status.indexing.done}/${status.indexing.total} files\n\n`);
    }
    if (status?.priming) {
      tooltip.appendMarkdown(`Primed ${status.priming.done}/${status.priming.total} files\n\n`);
    }
    // A server that is down has no mode to switch: the click shows why it is down.
    const down = this.state === "stopped" || this.state === "failed";
    this.item.command = down ? "titansLsp.showServerLog" : "titansLsp.switchMode";
    tooltip.appendMarkdown(
      down
        ? "The server is not running: click to show the server log (Titans LSP: Restart server starts it again)."
        : "Click to switch mode.",
    );
    this.item.tooltip = tooltip;
  }

  dispose(): void {
    this.item.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}
