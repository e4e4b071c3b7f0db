"""Training on verl; the only sage_rl package that imports verl.

    launch.py             `sage-rl train`: compose a recipe on verl's `ppo_trainer` config, run verl's PPO main
    cpu_platform.py       verl 0.9.1 on a machine with no accelerator: a `cpu` platform plus named workarounds
    search_agent_loop.py  Search-R1 rollouts inside verl: the token-level adapter of `sage_rl.episode`
    trainer.py            verl's PPO trainer with `sage/*` step metrics and the reward guard, and its task runner
    guard.py              per-step rollout statistics and the judge-failure guard (pure Python)
"""
