"""A custom reward for the search-training e2e test: the number of searches the agent loop counted.

It only scores above 0 if `num_searches` travelled from the agent loop's extra_fields through verl into
the reward function's `extra_info`, which is what the test checks.
"""


def search_count_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return float((extra_info or {}).get("num_searches", 0)) / 10.0
