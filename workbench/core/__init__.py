"""Pure-torch core: configs, task distributions, models, algorithms, engine. Never imports Qt or the catalog."""
