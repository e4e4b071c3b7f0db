"""Whole runs with scripted services: outputs, per-item fault tolerance, report, resume and its guards."""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
import pytest
from sage_world import FakeRetriever, standard_cfg, standard_world, write_corpus

from sage_rl.generate.loop import Pipeline, run_generation, sample_seeds
from sage_rl.generate.records import ItemRecord
from sage_rl.generate.store import RecordStore
from sage_rl.llm import ScriptedChatModel


def run(cfg, retriever=None):
    model = ScriptedChatModel(standard_world())
    return asyncio.run(run_generation(cfg, Pipeline(model, model, retriever or FakeRetriever(), model)))


def records(path):
    return [ItemRecord.from_dict(json.loads(line)) for line in open(path)]


def test_run_writes_dataset_verl_parquet_and_report(tmp_path):
    cfg = standard_cfg(tmp_path / "out", write_corpus(tmp_path / "c.jsonl"))
    paths = run(cfg)
    recs = {r.item_id: r for r in records(paths["records"])}
    assert sorted(recs) == list(range(12))
    for r in recs.values():
        i = int(r.seed.title[1:])
        expected = {0: "accepted" if r.seed.target_steps <= 3 else "rejected", 1: "rejected", 2: "rejected"}[i % 3]
        assert r.status == expected, (i, r)
    qa = [json.loads(line) for line in open(paths["qa_jsonl"])]
    # i%3==0 accepted at round 0 (3 searches >= S); i%3==1 too easy twice -> kept by the relaxed last-round
    # filter only if |S*| >= 2, which 1 search is not; i%3==2 never correct.
    assert sorted(q["item_id"] for q in qa) == [0, 3, 6, 9]
    assert all(q["min_searches"] == 3 and q["round"] == 0 and q["pass_at_k"] for q in qa)
    verl = pq.read_table(paths["verl_parquet"]).to_pylist()
    assert len(verl) == 4 and verl[0]["prompt"][0]["role"] == "user"
    assert "<search>" in verl[0]["prompt"][0]["content"] and verl[0]["prompt"][0]["content"].endswith("?\n")
    assert verl[0]["reward_model"]["ground_truth"]["target"] == [qa[0]["answer"]]
    assert verl[0]["extra_info"]["target_steps"] in (2, 3) and verl[0]["extra_info"]["seed_doc_id"].startswith("doc")
    report = paths["report"].read_text()
    assert report.splitlines()[0] == "# SAGE generation report"
    assert "| round 0 (A_gen with S) | 12 | 66.7 | 33.3 |" in report  # 8 of 12 correct, 4 pass
    assert "pairs whose question states their answer (a solver that copies it is correct): 0 of 4 in the dataset; " \
           "rounds whose pair did, made not difficult by `loop.reject_stated_answers`: 0" in report
    assert (paths["report"].parent / "plots" / "search_histograms.png").stat().st_size > 1000
    traj_ids = [json.loads(line)["item_id"] for line in open(paths["trajectories"])]
    assert sorted(traj_ids) == list(range(12))


def test_item_faults_are_retried_then_recorded_and_never_stop_the_run(tmp_path):
    cfg = standard_cfg(tmp_path / "out", write_corpus(tmp_path / "c.jsonl"))
    retriever = FakeRetriever(fail=lambda q: q.startswith("T4 "))
    paths = run(cfg, retriever)
    recs = {r.item_id: r for r in records(paths["records"])}
    failed = [r for r in recs.values() if r.status == "failed"]
    assert [r.seed.title for r in failed] == ["T4"] and failed[0].attempts == 2
    assert "ConnectionError: retrieval down" in failed[0].error
    assert len(recs) == 12 and sum(q.startswith("T4 ") for q in retriever.queries) == 2
    assert "failed items (errors after retries): 1" in paths["report"].read_text()


def test_rerun_of_a_finished_run_does_no_work_and_changed_seeds_are_refused(tmp_path):
    cfg = standard_cfg(tmp_path / "out", write_corpus(tmp_path / "c.jsonl"))
    run(cfg)
    model = ScriptedChatModel(standard_world())
    asyncio.run(run_generation(cfg, Pipeline(model, model, FakeRetriever(), model)))
    assert model.calls == []
    # a folder started before a setting existed resumes (the setting takes its default); a changed one is refused
    saved = tmp_path / "out" / "config.yaml"
    text = saved.read_text()
    assert "retry_garbled: true" in text
    saved.write_text(text.replace("  retry_garbled: true\n", ""))
    asyncio.run(run_generation(cfg, Pipeline(model, model, FakeRetriever(), model)))
    assert model.calls == []
    cfg.loop.retry_garbled = False
    with pytest.raises(ValueError, match="different `loop` settings"):
        run(cfg)
    cfg.loop.retry_garbled = True
    cfg.seeds.seed = 1
    with pytest.raises(ValueError, match="different `seeds` settings"):
        run(cfg)


def test_seeds_are_deterministic_and_respect_min_words(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", n=30)
    with open(corpus, "a") as f:
        f.write(json.dumps({"id": "stub", "contents": '"Stub"\ntoo short'}) + "\n")
    cfg = standard_cfg(tmp_path / "out", corpus, num_items=10)
    a, b = sample_seeds(cfg), sample_seeds(cfg)
    assert a == b and len({s.doc_id for s in a}) == 10 and "stub" not in {s.doc_id for s in a}
    assert {s.target_steps for s in a} <= {2, 3} and {s.answer_type for s in a} <= {"number", "date", "entity"}
    cfg.seeds.num_items = 50
    assert len(sample_seeds(cfg)) == 30  # capped at the eligible passages


def test_store_repairs_a_torn_record_and_drops_orphan_trajectories(tmp_path):
    cfg = standard_cfg(tmp_path / "out", write_corpus(tmp_path / "c.jsonl"))
    paths = run(cfg)
    lines = open(paths["records"]).read().splitlines(keepends=True)
    # simulate kill -9: the last record half-written, and a trajectory of an item whose record never landed
    open(paths["records"], "w").write("".join(lines[:-1]) + lines[-1][:40])
    lost = json.loads(lines[-1])["item_id"]
    with RecordStore(tmp_path / "out") as store:
        done = store.open()
    assert set(done) == set(range(12)) - {lost}
    assert open(paths["records"]).read() == "".join(lines[:-1])
    assert sorted(json.loads(t)["item_id"] for t in open(paths["trajectories"])) == sorted(done)
    with RecordStore(tmp_path / "out"), pytest.raises(RuntimeError, match="another sage-rl generate run"):
        RecordStore(tmp_path / "out").__enter__()
