"""The architecture diagram, generated from the real flow by `bytewax.visualize` (never drawn by hand)."""

from __future__ import annotations

from bytewax.visualize import to_mermaid

from flows.trading import build_flow
from headrace.config import load_config
from sources import synthetic
from sources.replay_plan import ReplayPlan


def mermaid() -> str:
    """Return the Mermaid text of the replay flow (built over a tiny synthetic plan; nothing runs)."""
    plan = ReplayPlan.build(synthetic.generate(400, seed=1), chunk_rows=100)
    flow = build_flow(plan, load_config(), run_id="diagram", dsn="chdb://memory")
    return to_mermaid(flow) + "\n"
