"""Evaluation of search agents on benchmarks: metrics, episode runner and the `sage-rl eval` command."""
