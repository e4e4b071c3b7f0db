"""The only sage_rl package that imports verl: launcher, CPU platform plugin, and (later) the search agent loop."""
