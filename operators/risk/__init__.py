"""Portfolio risk: pure risk measures (VaR, Expected Shortfall, Cornish-Fisher, liquidity-adjusted VaR)."""
