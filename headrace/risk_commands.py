"""Operator commands to the risk engine: ``headrace risk halt|reduce|resume --reason TEXT [--at TIME]``.

Commands are JSON lines in one file (``risk.commands_file``, by default ``<storage.state_dir>/risk-commands.jsonl``):
``{"action": "halt", "reason": "...", "account": "...", "at": "2021-05-19T12:00:00Z", "issued": "..."}``.

- A replay applies the commands that have an ``at``, each from the first bar time at or after it, so the same
  file gives the same run (the file is read when the flow is built).
- Paper and live trading apply a command without ``at`` at once: the account step reads the file on every
  cross-section and applies the commands issued after the last one it applied (kept in its snapshot, so a
  restarted worker neither loses nor repeats one).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from pathlib import Path

from headrace.config import Config
from headrace.errors import ConfigError
from operators.risk.engine import Command

ACTIONS = ("halt", "reduce", "resume")


def commands_path(config: Config) -> Path:
    """The commands file of `config`."""
    if config.risk.commands_file:
        return Path(config.risk.commands_file)
    return Path(config.storage.state_dir) / "risk-commands.jsonl"


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _ns(text: str, where: str) -> int:
    try:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(where, f"{text!r} is not an ISO time ({e})") from e
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return int(d.timestamp()) * 10**9 + d.microsecond * 1000


def append(path: Path, action: str, reason: str, *, account: str, at: str | None = None,
           now_ns: int | None = None) -> dict[str, str]:
    """Append one command to `path` and return it; raises `ConfigError` for an unknown action, an empty reason or
    a bad time."""
    if action not in ACTIONS:
        raise ConfigError("action", f"must be one of {', '.join(ACTIONS)}, was {action!r}")
    if not reason.strip():
        raise ConfigError("--reason", "every risk command needs a reason (it is recorded with the state change)")
    issued = now_ns if now_ns is not None else time.time_ns()
    line = {"action": action, "reason": reason.strip(), "account": account, "issued": _iso(issued)}
    if at:
        line["at"] = _iso(_ns(at, "--at"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    return line


def read(path: Path, account: str) -> list[tuple[Command, bool]]:
    """Every command of `account` in `path`, in file order, each with whether it has an ``at`` (scheduled)."""
    if not path.exists():
        return []
    out: list[tuple[Command, bool]] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(where, f"not a JSON line ({e.msg})") from e
        if not isinstance(d, dict) or d.get("action") not in ACTIONS or not isinstance(d.get("reason"), str):
            raise ConfigError(where, f"needs an action ({', '.join(ACTIONS)}) and a reason, was {raw[:80]!r}")
        if d.get("account", account) != account:
            continue
        issued = _ns(str(d.get("issued", "1970-01-01T00:00:00Z")), where)
        at = _ns(str(d["at"]), where) if d.get("at") else 0
        out.append((Command(at=at, action=d["action"], reason=d["reason"], issued=issued), bool(d.get("at"))))
    return out


def scheduled(path: Path, account: str) -> tuple[Command, ...]:
    """The commands a replay applies: those with an ``at``, by time."""
    return tuple(sorted((c for c, has_at in read(path, account) if has_at), key=lambda c: (c.at, c.issued)))


class Inbox:
    """Paper and live: the commands without ``at`` issued after a time, read from the file when asked."""

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account

    def __call__(self, after: int) -> list[Command]:
        try:
            found = read(self.path, self.account)
        except ConfigError:
            return []  # a line being written; the next cross-section reads it whole
        return sorted((c for c, has_at in found if not has_at and c.issued > after), key=lambda c: c.issued)


def describe(commands: Sequence[Command]) -> list[str]:
    return [f"{_iso(c.at) if c.at else 'at once'} {c.action}: {c.reason}" for c in commands]
