"""A custom reward for the training e2e test, loaded by path like any user's reward file.

A random model never answers correctly, so the default exact-match reward is 0 for every sample and GRPO's
advantages (and gradients) vanish. This reward only has to differ between the samples of one prompt, which
makes the actor update real: non-zero advantages, a non-zero gradient, weights that move.
"""


def spread_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return (sum(map(ord, solution_str)) % 101) / 100.0
