"""SAGE question generation (`sage-rl generate`): difficulty-controlled deep-search QA pairs from a corpus.

Pipeline per seed passage (SAGE, arXiv 2601.18202, its generation algorithm; mechanics as in the authors'
released code, google-research `sage/`):

    loop.py       seeds -> round 0 -> verify -> feedback rounds -> record; resumable concurrent run
    generator.py  A_gen: search-then-write (round 0, resample) and one-call revisions
    verify.py     K solver rollouts (sage_rl.search_agent), judged (sage_rl.judge): pass@K, |S*| >= S
    feedback.py   which solver trace to show; difficulty and correctness prompts
    assemble.py   strict/relaxed filters, dedupe, min searches; qa.jsonl/parquet and verl parquet
    store.py      append-only records + trajectories, crash repair, exactly-once resume
    report.py     report.md + plots: the paper's intrinsic table, histograms, cost, examples
    records.py    the typed records written to disk
    config.py     the recipe schema with the paper's defaults

Shared with other stages: sage_rl.protocol (tags, parsing, passages), sage_rl.llm (chat clients),
sage_rl.search_agent (the multi-turn search loop), sage_rl.judge.
"""
