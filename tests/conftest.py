"""Shared test settings: every test runs offline, with the project's own model cache."""

import os

# No model hub is reachable where sage_rl is tested; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
