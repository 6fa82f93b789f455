"""Operator commands: the file `headrace risk halt|reduce|resume` appends to, what a replay schedules from it, and
the inbox paper and live trading read at once (each command applied once, also across a restart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headrace.errors import ConfigError
from headrace.risk_commands import Inbox, append, read, scheduled
from operators.risk.engine import Command, RiskEngine, RiskSettings

S = 10**9


def test_commands_are_json_lines_with_their_times(tmp_path: Path) -> None:
    path = tmp_path / "cmds.jsonl"
    append(path, "halt", " drill ", account="main", at="2021-05-19T12:00:00Z", now_ns=5 * S)
    append(path, "resume", "over", account="main", now_ns=6 * S)
    append(path, "reduce", "other account", account="b", at="2021-05-19T00:00:00Z", now_ns=7 * S)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"action": "halt", "reason": "drill", "account": "main", "issued": "1970-01-01T00:00:05Z",
                        "at": "2021-05-19T12:00:00Z"}
    assert "at" not in lines[1]
    found = read(path, "main")
    assert [(c.action, has_at) for c, has_at in found] == [("halt", True), ("resume", False)]
    assert scheduled(path, "main") == (Command(at=1_621_425_600 * S, action="halt", reason="drill", issued=5 * S),)


@pytest.mark.parametrize("action, reason, at, key, says", [
    ("stop", "x", None, "action", "must be one of halt, reduce, resume"),
    ("halt", "  ", None, "--reason", "needs a reason"),
    ("halt", "x", "tomorrow", "--at", "is not an ISO time"),
])
def test_bad_commands_name_what_is_wrong(tmp_path: Path, action: str, reason: str, at: str | None, key: str,
                                         says: str) -> None:
    with pytest.raises(ConfigError) as info:
        append(tmp_path / "c.jsonl", action, reason, account="main", at=at)
    assert info.value.key == key and says in info.value.reason
    assert not (tmp_path / "c.jsonl").exists()


def test_a_corrupt_line_is_named_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"action": "halt", "reason": "x"}\nnot json\n')
    with pytest.raises(ConfigError) as info:
        read(path, "main")
    assert info.value.key == f"{path}:2" and "not a JSON line" in info.value.reason


def test_paper_and_live_apply_a_command_at_once_and_only_once(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    inbox = Inbox(path, "main")
    engine = RiskEngine(RiskSettings(account="main"), ["x:A/USD"], inbox)
    assert engine.commands(1 * S) == [] and engine.state == "ACTIVE"
    append(path, "halt", "incident", account="main", now_ns=100 * S)
    changes = engine.commands(2 * S)  # the next cross-section, whatever its event time
    assert [type(c).__name__ for c in changes] == ["TradingStateChange", "Alert"]
    assert engine.state == "HALTED" and "operator: incident" in changes[0].reason  # type: ignore[union-attr]
    assert engine.commands(3 * S) == []  # not applied twice
    # a restarted worker resumes from the snapshot: the halt is not applied again, a later resume is
    restored = RiskEngine.restore(engine.s, engine.keys, engine.snapshot(), inbox)
    assert restored.commands(4 * S) == [] and restored.state == "HALTED"
    append(path, "resume", "incident over", account="main", now_ns=200 * S)
    assert [c.state for c in restored.commands(5 * S) if type(c).__name__ == "TradingStateChange"] == ["ACTIVE"]
    # commands with a time are the replay's: the inbox leaves them to the schedule
    append(path, "halt", "scheduled", account="main", at="2030-01-01T00:00:00Z", now_ns=300 * S)
    assert restored.commands(6 * S) == [] and restored.state == "ACTIVE"


def test_commands_landing_at_one_time_are_each_a_row_of_their_own() -> None:
    cmds = (Command(at=10, action="reduce", reason="desk"), Command(at=10, action="resume", reason="ok"),
            Command(at=10, action="reduce", reason="desk again"))
    engine = RiskEngine(RiskSettings(account="main", commands=cmds), ["x:A/USD"])
    changes = [c for c in engine.commands(10) if type(c).__name__ == "TradingStateChange"]
    assert [(c.previous, c.state) for c in changes] == [("ACTIVE", "REDUCING"), ("REDUCING", "ACTIVE"),  # type: ignore[union-attr]
                                                        ("ACTIVE", "REDUCING")]
    assert len({c.event_id for c in changes}) == 3  # the table keeps one row per id: none is lost
