// A stand-in for `vscode-languageclient/node` (tests/e2e/vscode_unit.cjs): a client whose start()
// and requests do what globalThis.SCENARIO says: "ok", "hang" (never settle) or "reject".
"use strict";
const State = { Stopped: 1, Running: 2, Starting: 3 };
const never = () => new Promise(() => undefined);
// "reject" fails as the real client does when the spawn fails: with SCENARIO.error, a string.
const outcome = (what, value) =>
  what === "hang"
    ? never()
    : what === "reject"
      ? Promise.reject(globalThis.SCENARIO.error || new Error(`stub: ${value} failed`))
      : Promise.resolve(value);

class LanguageClient {
  constructor(id, name, serverOptions, clientOptions) {
    Object.assign(this, { id, name, serverOptions, clientOptions, state: State.Stopped, listeners: [] });
    globalThis.CLIENTS = [...(globalThis.CLIENTS || []), this];
  }
  onDidChangeState(listener) {
    this.listeners.push(listener);
    return { dispose() {} };
  }
  // SCENARIO.notifications: { method: [params, ...] }, delivered once the client is running.
  onNotification(method, handler) {
    const sent = ((globalThis.SCENARIO.notifications || {})[method] || []).slice();
    this.listeners.push(({ newState }) => {
      if (newState === State.Running) {
        sent.splice(0).forEach((params) => handler(params));
      }
    });
    return { dispose() {} };
  }
  setState(newState) {
    const oldState = this.state;
    this.state = newState;
    this.listeners.forEach((listener) => listener({ oldState, newState }));
  }
  start() {
    this.setState(State.Starting);
    const scenario = globalThis.SCENARIO.start || "ok";
    if (scenario === "crash") {
      return this.crash();
    }
    return outcome(scenario, undefined).then(
      () => this.setState(State.Running),
      (error) => {
        this.setState(State.Stopped);
        throw error;
      },
    );
  }
  // "crash": the server writes SCENARIO.stderr (lines) and exits; the client hands its stderr to
  // clientOptions.stdioOptions (as the real one does) and asks the error handler what to do.
  crash() {
    const { Readable } = require("stream");
    const stderr = Readable.from((globalThis.SCENARIO.stderr || []).map((line) => `${line}\n`));
    const channel = { info() {}, error() {} };
    if (this.clientOptions.stdioOptions) {
      this.clientOptions.stdioOptions.stderr(stderr, channel);
    }
    return new Promise((resolve) => stderr.on("end", resolve))
      .then(() => new Promise((resolve) => setTimeout(resolve, 10)))
      .then(() => this.clientOptions.errorHandler.closed())
      .then(() => this.setState(State.Stopped));
  }
  stop() {
    this.setState(State.Stopped);
    return Promise.resolve();
  }
  sendRequest(_type, params) {
    return outcome(globalThis.SCENARIO.request || "ok", { answered: params.command });
  }
  sendNotification() {
    return Promise.resolve();
  }
}

module.exports = {
  LanguageClient,
  State,
  TransportKind: { stdio: 0 },
  ExecuteCommandRequest: { type: { method: "workspace/executeCommand" } },
  CloseAction: { DoNotRestart: 1, Restart: 2 },
  ErrorAction: { Continue: 1, Shutdown: 2 },
};
