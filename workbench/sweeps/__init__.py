"""Sweeps: a definition (`spec`), which configuration to try next (`search`: grid, random,
Optuna's TPE), and, to come, the driver and its executors (local processes through
`workbench.launcher`, Ray). Qt-free; every trial is an ordinary run in the catalog."""
