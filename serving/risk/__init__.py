"""Risk: dynamic leverage, trailing take-profit, stops and liquidation, kill switch, the order veto."""
