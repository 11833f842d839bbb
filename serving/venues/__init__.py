"""Where orders go: the simulated venue (backtests, paper trading); the live one joins it later."""
