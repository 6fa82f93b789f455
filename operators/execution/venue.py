"""The venue interface: what headrace asks of an exchange, and the records it gets back.

Pure: a `Venue` protocol and frozen records, plus `Credentials` (API key, secret, optional password) that never
show their values in a repr, str or format, loaded from the environment by `credentials_from_env`. The ccxt
implementation is `sinks.ccxt_venue.CcxtVenue`; the simulated venue of replay and paper stands behind the same
records.

Order states are the lifecycle's (`operators.execution.order_lifecycle.OrderState`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from headrace.errors import HeadraceError
from operators.execution.markets import Market
from operators.execution.order_lifecycle import OrderState

Side = str  # "buy" | "sell"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A child order to send: a limit IOC of `amount` base units at `price`, with its deterministic client id."""

    client_id: str
    instrument: str  # "venue:BASE/QUOTE[:SETTLE]"
    side: Side
    amount: float
    price: float


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue reports it; `status` is one of the lifecycle's states, `reason` says why rejected.

    `venue_id` is None when the venue never took the order (a rejection before acceptance).
    """

    client_id: str
    venue_id: str | None
    instrument: str
    side: Side
    amount: float
    price: float | None
    filled: float
    average: float | None
    status: OrderState
    ts: int | None  # venue time of the last update, epoch ns
    reason: str = ""


@dataclass(frozen=True, slots=True)
class VenueBalance:
    """One currency's balance on one venue: free + used = total (as the venue reports them)."""

    venue: str
    currency: str
    free: float
    used: float
    total: float


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One fill (trade) of the account's own orders on a venue."""

    fill_id: str
    client_id: str | None
    venue_order_id: str | None
    instrument: str
    side: Side
    price: float
    amount: float
    fee: float
    fee_currency: str | None
    ts: int  # epoch ns


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """A derivatives position: signed `contracts` (long > 0), entry price and the venue's unrealised PnL."""

    venue: str
    instrument: str
    contracts: float
    contract_size: float
    entry_price: float | None
    unrealized_pnl: float | None
    ts: int | None


@runtime_checkable
class Venue(Protocol):
    """What headrace asks of an exchange. Every method talks to the venue; errors are the venue's own."""

    name: str

    def markets(self) -> Mapping[str, Market]:
        """Return the venue's markets by ccxt symbol, with precision, limits and fees."""
        ...

    def submit(self, order: OrderRequest) -> VenueOrder:
        """Send a limit IOC order; return what the venue made of it (a rejection is a `rejected` order)."""
        ...

    def cancel(self, order: VenueOrder | str, instrument: str | None = None) -> VenueOrder:
        """Cancel an order given as a `VenueOrder` or a client id (then `instrument` is required)."""
        ...

    def fetch_order_by_client_id(self, client_id: str, instrument: str) -> VenueOrder | None:
        """Return the order with this client id, or None when the venue does not know it."""
        ...

    def fetch_open_orders(self, instrument: str | None = None) -> Sequence[VenueOrder]:
        """Return the working orders, of one instrument or all."""
        ...

    def fetch_balances(self) -> Sequence[VenueBalance]:
        """Return the balances of every currency the venue reports."""
        ...

    def fetch_positions(self) -> Sequence[VenuePosition]:
        """Return the derivatives positions (empty for a spot venue)."""
        ...

    def fetch_my_trades(self, instrument: str, since_ns: int | None = None) -> Sequence[VenueFill]:
        """Return the account's fills on one instrument since `since_ns` (epoch ns), oldest first."""
        ...


# --------------------------------------------------------------------------------------------------------------
# Credentials

_HIDDEN = "***"


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key, secret and optional password (passphrase); no repr, str or format ever shows them.

    >>> c = Credentials("my-key", "my-secret")
    >>> c, str(c), f"{c}", "my-key" in repr(c) + format(c, "")
    (Credentials(key=***, secret=***, password=None), 'Credentials(key=***, secret=***, password=None)', \
'Credentials(key=***, secret=***, password=None)', False)
    """

    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credentials(key={_HIDDEN}, secret={_HIDDEN}, password={None if self.password is None else _HIDDEN})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def secrets(self) -> tuple[str, ...]:
        """Return the values that must never be written anywhere (for log redaction)."""
        return tuple(v for v in (self.api_key, self.secret, self.password) if v)


class MissingCredentials(HeadraceError):
    """A venue's API key, secret or password is not in the environment."""


def env_names(venue: str) -> tuple[str, str, str]:
    """Return the environment variables of a venue's key, secret and password.

    Single underscores: ``HEADRACE__...`` (double) variables are config keys.

    >>> env_names("binance")
    ('HEADRACE_API_KEY_BINANCE', 'HEADRACE_API_SECRET_BINANCE', 'HEADRACE_API_PASSWORD_BINANCE')
    """
    v = venue.upper().replace("-", "_")
    return f"HEADRACE_API_KEY_{v}", f"HEADRACE_API_SECRET_{v}", f"HEADRACE_API_PASSWORD_{v}"


def credentials_from_env(venue: str, environ: Mapping[str, str], *, password: bool = False) -> Credentials:
    """Load a venue's credentials from `environ`; a missing (or empty) variable is named, never a value.

    `password`: whether the venue needs one (OKX, Coinbase legacy); it is read when present either way.

    >>> credentials_from_env("okx", {"HEADRACE_API_KEY_OKX": "k", "HEADRACE_API_SECRET_OKX": "s"})
    Credentials(key=***, secret=***, password=None)
    >>> credentials_from_env("okx", {"HEADRACE_API_KEY_OKX": "k"})
    Traceback (most recent call last):
    ...
    operators.execution.venue.MissingCredentials: HEADRACE_API_SECRET_OKX is not set (API secret of venue 'okx')
    """
    key_name, secret_name, password_name = env_names(venue)
    for name, what in ((key_name, "API key"), (secret_name, "API secret")) + (
            ((password_name, "API password"),) if password else ()):
        if not environ.get(name):
            raise MissingCredentials(f"{name} is not set ({what} of venue {venue!r})")
    return Credentials(environ[key_name], environ[secret_name], environ.get(password_name) or None)
