"""sage_rl: SAGE data generation and PPO training of deep-search agents on verl.

Importing the package is cheap on purpose: heavy dependencies (torch, verl, vLLM) are imported
by the modules that need them, so `sage-rl --help` and the unit tests start fast.
"""

__version__ = "0.1.0"
