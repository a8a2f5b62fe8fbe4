"""titans-lsp's own LSP messages: names, typed params, and their one conversion to and from JSON.

The standard LSP types come from lsprotocol; everything titans-lsp adds on top lives here, as
dataclasses with snake_case fields that go over the wire in camelCase:

  client -> server  ``titans/cursor``               :class:`CursorParams`
  server -> client  ``titans/status``               :class:`StatusParams` (with :class:`CompletionReport`,
                                                    :class:`PrepareReport`)
  commands          ``titans-lsp.primeWorkspace``    :class:`FolderArgs` (``{"folder": uri, "force": bool}``)
                    ``titans-lsp.resetMemory``       :class:`FolderArgs` (``{"folder": uri}``)
                    ``titans-lsp.status``            no arguments; returns the server's status object
                    ``titans-lsp.accepted``          :class:`AcceptedArgs` (``{"id": item id}``): the
                                                    ``InlineCompletionItem.command`` the client runs on accept

The server, ``titans-lsp bench --server`` and the tests all import these, so the wire format is
written once. Parsing is strict: a malformed message raises :class:`ProtocolError` with a message
that says what was expected, instead of being half-understood.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

CURSOR_NOTIFICATION = "titans/cursor"
STATUS_NOTIFICATION = "titans/status"
CMD_PRIME = "titans-lsp.primeWorkspace"
CMD_RESET = "titans-lsp.resetMemory"
CMD_STATUS = "titans-lsp.status"
CMD_ACCEPTED = "titans-lsp.accepted"
COMMANDS = (CMD_PRIME, CMD_RESET, CMD_STATUS, CMD_ACCEPTED)
NO_FOLDER = "titans-lsp:no-folder"  # the state of documents outside every workspace folder


class ProtocolError(ValueError):
    """A custom message or command argument that does not have the expected shape."""


# ---- conversion ---------------------------------------------------------------------------------
def to_plain(value: Any) -> Any:
    """JSON-like values from what pygls hands over: lsprotocol attrs objects are unstructured, and
    the namedtuples (or plain objects) pygls makes of a custom method's params become dicts."""
    if hasattr(value, "__attrs_attrs__"):
        from lsprotocol import converters

        return converters.get_converter().unstructure(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    if hasattr(value, "_asdict"):
        return {key: to_plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {key: to_plain(item) for key, item in vars(value).items()}
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def to_wire(message: Any) -> dict:
    """A dataclass message as the JSON object sent (camelCase keys, nested messages converted)."""
    out = {}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if dataclasses.is_dataclass(value):
            value = to_wire(value)
        out[_camel(f.name)] = value
    return out


# ---- client -> server ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CursorParams:
    """``titans/cursor``: the cursor rests at (line, character) of a document; pre-warm its prompt."""

    uri: str
    line: int
    character: int

    @classmethod
    def from_wire(cls, params: Any) -> "CursorParams":
        params = to_plain(params)
        try:
            uri = params["textDocument"]["uri"]
            line, character = params["position"]["line"], params["position"]["character"]
        except (KeyError, TypeError):
            raise ProtocolError(f"{CURSOR_NOTIFICATION}: expected {{textDocument: {{uri}}, position: "
                                f"{{line, character}}}}, got {params!r}") from None
        if not isinstance(uri, str) or not all(_is_index(v) for v in (line, character)):
            raise ProtocolError(f"{CURSOR_NOTIFICATION}: uri must be a string and line/character non-negative "
                                f"integers, got {params!r}")
        return cls(uri, line, character)

    def to_wire(self) -> dict:
        return {"textDocument": {"uri": self.uri}, "position": {"line": self.line, "character": self.character}}


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


@dataclass(frozen=True)
class FolderArgs:
    """Arguments of ``primeWorkspace`` / ``resetMemory``: no argument (every folder), or one object
    ``{"folder": uri}`` (``"force": true`` re-primes from scratch). A bare URI string is accepted."""

    folder: str | None = None
    force: bool = False

    @classmethod
    def from_command(cls, command: str, args: Any) -> "FolderArgs":
        args = to_plain(args)
        if args is None or args == [] or args == ():
            return cls()
        if not isinstance(args, (list, tuple)) or len(args) != 1:
            raise ProtocolError(f"{command}: expected no argument or one object {{\"folder\": uri}}, got {args!r}")
        arg = args[0]
        if isinstance(arg, str):
            arg = {"folder": arg}
        if not isinstance(arg, dict):
            raise ProtocolError(f"{command}: expected an object {{\"folder\": uri}}, got {arg!r}")
        unknown = set(arg) - {"folder", "force"}
        if unknown:
            raise ProtocolError(f"{command}: unknown argument(s) {', '.join(sorted(unknown))}")
        folder, force = arg.get("folder"), arg.get("force", False)
        if folder is not None and not (isinstance(folder, str) and folder):
            raise ProtocolError(f"{command}: folder must be a workspace folder URI, got {folder!r}")
        if not isinstance(force, bool):
            raise ProtocolError(f"{command}: force must be true or false, got {force!r}")
        return cls(folder, force)


@dataclass(frozen=True)
class AcceptedArgs:
    """Arguments of ``titans-lsp.accepted``: one object ``{"id": item id}`` as the server put it in the
    item's command; ``"chars"`` (optional) is how many characters of the item were kept."""

    id: str
    chars: int | None = None

    @classmethod
    def from_command(cls, args: Any) -> "AcceptedArgs":
        args = to_plain(args)
        if not isinstance(args, (list, tuple)) or len(args) != 1 or not isinstance(args[0], dict):
            raise ProtocolError(f'{CMD_ACCEPTED}: expected one object {{"id": item id}}, got {args!r}')
        arg = args[0]
        unknown = set(arg) - {"id", "chars"}
        if unknown:
            raise ProtocolError(f"{CMD_ACCEPTED}: unknown argument(s) {', '.join(sorted(unknown))}")
        item, chars = arg.get("id"), arg.get("chars")
        if not isinstance(item, str) or not 0 < len(item) <= 64:
            raise ProtocolError(f"{CMD_ACCEPTED}: id must be the item id string the server sent, got {item!r}")
        if chars is not None and not _is_index(chars):
            raise ProtocolError(f"{CMD_ACCEPTED}: chars must be a non-negative integer, got {chars!r}")
        return cls(item, chars)

    def to_arguments(self) -> list[dict]:
        return [{"id": self.id}] if self.chars is None else [{"id": self.id, "chars": self.chars}]


# ---- server -> client ---------------------------------------------------------------------------
@dataclass
class CompletionReport:
    """``lastCompletion``: what the last answered completion cost (``bench --server`` matches it to
    its request by document and version)."""

    folder: str
    uri: str
    version: int | None
    mode: str
    prompt_tokens: int
    context_chars: int
    reused: int
    prefilled: int
    decoded: int
    accepted: int
    latency_ms: float | None
    engine_ms: float | None
    items: int
    timings: dict[str, float | None] = field(default_factory=dict)  # engine phases, ms
    language: str = "text"  # the registry language whose rules applied (retrieval/languages.py)

    @classmethod
    def from_wire(cls, params: Any) -> "CompletionReport | None":
        """The report inside a ``titans/status`` notification, or None when it has none (or a bad one)."""
        params = to_plain(params)
        last = params.get("lastCompletion") if isinstance(params, dict) else None
        if not isinstance(last, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        values = {_snake(k): v for k, v in last.items() if _snake(k) in names}
        try:
            return cls(**values)
        except TypeError:
            return None


@dataclass
class PrepareReport:
    """``lastPrepare``: the last finished pre-warm (``titans/cursor``)."""

    folder: str
    uri: str
    line: int
    character: int
    version: int | None
    mode: str
    prompt_tokens: int
    prefilled: int
    reused: int
    ms: float | None


@dataclass
class BackendStatus:
    """``backend``: which backend answers completions and whether it is healthy (never a secret)."""

    name: str  # local | llamacpp | openai
    state: str | None  # ready | starting | restarting | down | stopped | remote | error | loading
    model: str | None
    url: str | None
    last_error: str | None  # the last failure shown to the user; None once a request succeeds
    serving: str | None = None  # the backend that answers this folder's mode (``auto``: llamacpp or local)
    reason: str | None = None  # ``auto``: why it chose so (llama-server found, or why not)

    @classmethod
    def from_describe(cls, info: dict, last_error: str | None, serving: str | None = None) -> "BackendStatus":
        """From a backend's ``describe()`` (or a BackendConfig's before the model is loaded)."""
        return cls(name=str(info.get("name")), state=info.get("state"), model=info.get("model"), url=info.get("url"),
                   last_error=last_error or info.get("error"), serving=serving or info.get("name"),
                   reason=info.get("reason"))


@dataclass
class StatusParams:
    """``titans/status``: what the editor's status bar shows for one folder."""

    folder: str
    mode: str
    indexing: dict | None  # {done, total} while indexing
    priming: dict | None  # {done, total} while priming
    last_latency_ms: float | None
    last_completion: CompletionReport | None = None
    last_prepare: PrepareReport | None = None
    backend: BackendStatus | None = None
    acceptance_today: dict | None = None  # {mode, decided, accepted, rate}: today's items in this folder's mode

    def to_wire(self) -> dict:
        wire = to_wire(self)
        for key in ("lastCompletion", "lastPrepare", "backend", "acceptanceToday"):  # absent rather than null: older clients test for the key
            if wire[key] is None:
                del wire[key]
        return wire


def progress_dict(value: tuple[int, int] | None) -> dict | None:
    return None if value is None else {"done": value[0], "total": value[1]}
