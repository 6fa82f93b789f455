"""Errors every package may raise; the bottom layer, importing nothing of ours."""

from __future__ import annotations


class HeadraceError(Exception):
    """Root of every error headrace raises on purpose."""


class ConfigError(HeadraceError):
    """A configuration value is wrong; names the key and the reason.

    Examples
    --------
    >>> str(ConfigError("risk.max_leverage", "must be > 0, was -1"))
    "config key 'risk.max_leverage': must be > 0, was -1"
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class DataSourceError(HeadraceError):
    """A data file cannot be read or identified; names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"data file {path!r}: {reason}")
        self.path = path
        self.reason = reason


class StorageError(HeadraceError):
    """The ClickHouse store cannot be used as asked (for example, an embedded database held by another run)."""


class InvariantError(HeadraceError):
    """A broken invariant inside a core: a bug or corrupt input that validation should have stopped. Never caught."""


class SnapshotVersionError(HeadraceError):
    """A snapshot was written by a different version of a core than the one restoring it."""

    def __init__(self, kind: str, found: int, expected: int) -> None:
        super().__init__(f"snapshot of {kind} has version {found!r}, expected {expected!r}")
        self.found = found
        self.expected = expected
