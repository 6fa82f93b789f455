"""Market inputs: recorded files (polars), the event-time merge and replay source, the synthetic generator."""
