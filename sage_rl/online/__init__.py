"""The generator–solver loop as an online data source for PPO: the question pool (`pool`), the difficulty
controller that steers the target number of searches S (`controller`). Pure Python: only
`sage_rl.train` connects it to verl."""
