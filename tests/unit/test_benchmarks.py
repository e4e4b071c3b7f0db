"""Benchmark jsonl: the loader's validation, every converter on a real excerpt, the shipped sets, the CLI."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sage_rl.assets import EMBEDDED_CORPUS, read_jsonl
from sage_rl.benchmarks import (
    CONVERTERS,
    SHIPPED,
    SHIPPED_NOTES,
    BenchmarkItem,
    benchmark_path,
    data_source_name,
    from_2wiki_fastgraphrag,
    from_agentic_rag,
    from_bamboogle_csv,
    from_deepresearcher,
    from_flashrag,
    from_frames,
    from_hotpotqa_rpt,
    from_musique_hipporag,
    from_r1searcher,
    from_sage,
    load_benchmark,
    main,
    write_benchmark,
)

FIXTURES = Path(__file__).resolve().parents[1] / "assets" / "benchmarks"

# One real excerpt per converter format (see tests/assets/benchmarks/README.md).
FORMAT_FIXTURES = {
    "flashrag": "reason_over_search/popqa_test.jsonl",
    "r1searcher": "r1_searcher/musique_500.jsonl",
    "hotpotqa-rpt": "derived/hotpotqa_rpt_questions.jsonl",
    "2wiki-fastgraphrag": "derived/2wiki_fastgraphrag101_questions.jsonl",
    "musique-hipporag": "derived/musique_hipporag_train100_questions.jsonl",
    "frames": "skillorchestra_frames/frames.jsonl",
    "agentic-rag": "agentic_rag_qa/nq_test_questions_and_answers.json",
    "deepresearcher": "derived/deepresearcher_test.jsonl",
    "bamboogle-csv": "bamboogle_original/bamboogle_prerelease_sheet1_inter.csv",
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """The hotpotqa sets are written to the cache on first use: keep that out of the user's ~/.cache."""
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def sage_qa_jsonl(tmp_path) -> Path:
    """A qa.jsonl written by the generator's own writer, so the converter is tested against its schema."""
    from sage_rl.generate.assemble import QAItem, write_outputs

    items = [
        QAItem(id=f"sage-{i}-r1", question=f"Which city hosted event {i}? ", answer=answer, golden_answers=(answer,),
               target_steps=3, min_searches=2 + i, pass_at_k=True, num_correct=1, k=4, avg_at_k=0.25, difficult=True,
               round=1, answer_type="place", seed_doc_id=f"hotpotqa-{i}",
               evidence_doc_ids=(f"hotpotqa-{i}", "hotpotqa-9"), steps=("find the event", "find its city"), item_id=i)
        for i, answer in enumerate(["Tulsa", "Paris"])
    ]
    return write_outputs(items, tmp_path / "gen")["qa_jsonl"]


def _write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- shipped sets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), [("bamboogle", 125), ("hotpotqa-test", 500), ("hotpotqa-dev", 300)])
def test_shipped_sets_load_with_expected_counts(name, count):
    items = load_benchmark(benchmark_path(name))
    assert len(items) == count
    assert len({i.id for i in items}) == count
    assert data_source_name(benchmark_path(name)) == data_source_name(name) == name
    assert name in SHIPPED_NOTES


def test_shipped_names_are_the_documented_ones():
    assert set(SHIPPED) == set(SHIPPED_NOTES) == {"bamboogle", "hotpotqa-test", "hotpotqa-dev"}


def test_hotpotqa_sets_are_answerable_from_the_embedded_corpus():
    # The claim of SHIPPED_NOTES: every gold paragraph of every question is in the embedded corpus.
    corpus_ids = {row["id"] for row in read_jsonl(EMBEDDED_CORPUS)}
    test, dev = load_benchmark(benchmark_path("hotpotqa-test")), load_benchmark(benchmark_path("hotpotqa-dev"))
    for item in test + dev:
        assert len(item.metadata["supporting_doc_ids"]) >= 2
        assert set(item.metadata["supporting_doc_ids"]) <= corpus_ids
    assert {i.metadata["rpt_split"] for i in test} == {"test"} and {i.metadata["rpt_split"] for i in dev} == {"dev"}
    assert not {i.id for i in test} & {i.id for i in dev}


def test_hotpotqa_cache_file_is_rewritten_when_stale():
    path = benchmark_path("hotpotqa-test")
    path.write_text('{"id": "stale", "question": "q?", "golden_answers": ["a"]}\n', encoding="utf-8")
    assert len(load_benchmark(benchmark_path("hotpotqa-test"))) == 500


def test_shipped_bamboogle_is_the_flashrag_file_converted():
    shipped = {i.id: i for i in load_benchmark(benchmark_path("bamboogle"))}
    excerpt = from_flashrag(FIXTURES / "reason_over_search/bamboogle_test.jsonl")
    assert [shipped[i.id] for i in excerpt] == excerpt


def test_benchmark_path_accepts_a_file_and_lists_shipped_names_for_unknown_ones(tmp_path):
    path = write_benchmark([BenchmarkItem("a", "q?", ("x",))], tmp_path / "mine.jsonl")
    assert benchmark_path(str(path)) == path
    with pytest.raises(FileNotFoundError, match="bamboogle, hotpotqa-dev, hotpotqa-test"):
        benchmark_path("bamboogel")


# --- loader -----------------------------------------------------------------------------------------------------


GOOD = {"id": "q1", "question": "Who?", "golden_answers": ["Ann"]}


@pytest.mark.parametrize(("bad_row", "problem"), [
    ({"question": "Who?", "golden_answers": ["Ann"]}, r"missing field\(s\) \['id'\]"),
    ({"id": "q2", "golden_answers": ["Ann"]}, r"missing field\(s\) \['question'\]"),
    ({"id": "q2", "question": "Who?", "golden_answers": []}, "golden_answers is empty"),
    ({"id": "q2", "question": "Who?", "golden_answers": "Ann"}, "golden_answers must be a list"),
    ({"id": "q2", "question": "Who?", "golden_answers": ["Ann", " "]}, r"golden_answers\[1\] must be a non-empty"),
    ({"id": "q2", "question": "  ", "golden_answers": ["Ann"]}, "question must be a non-empty string"),
    ({"id": 2, "question": "Who?", "golden_answers": ["Ann"]}, "id must be a non-empty string, got 2"),
    ({"id": "q2", "question": "Who?", "golden_answers": ["Ann"], "metadata": []}, "metadata must be a dict"),
    ({"id": "q2", "question": "Who?", "answer": "Ann"}, r"unknown fields \['answer'\].*convert"),
    ({"id": "q1", "question": "Who else?", "golden_answers": ["Bob"]}, "duplicate id 'q1' .first on row 1"),
    (["q2", "Who?"], "expected a JSON object, got list"),
    ("{not json", "not valid JSON"),
])
def test_load_benchmark_names_file_line_and_problem(tmp_path, bad_row, problem):
    path = _write_lines(tmp_path / "bad.jsonl", [GOOD, bad_row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: {problem}"):
        load_benchmark(path)


def test_load_benchmark_keeps_file_order_and_limit_takes_the_first(tmp_path):
    rows = [{"id": f"q{i}", "question": f"Q{i}?", "golden_answers": [str(i)]} for i in (3, 1, 2)]
    path = _write_lines(tmp_path / "b.jsonl", rows)
    assert [i.id for i in load_benchmark(path)] == ["q3", "q1", "q2"]
    assert [i.id for i in load_benchmark(path, limit=2)] == ["q3", "q1"]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_benchmark(path, limit=0)


def test_load_benchmark_validates_rows_beyond_the_limit(tmp_path):
    # A smoke run with --limit must still catch a broken file.
    path = _write_lines(tmp_path / "b.jsonl", [GOOD, GOOD])
    with pytest.raises(ValueError, match="b.jsonl:2: duplicate id"):
        load_benchmark(path, limit=1)


def test_load_benchmark_rejects_an_empty_file(tmp_path):
    with pytest.raises(ValueError, match="no questions"):
        load_benchmark(_write_lines(tmp_path / "empty.jsonl", []))


def test_write_then_load_round_trips_plain_and_gzip(tmp_path):
    items = [BenchmarkItem("a", "Où est-ce ?", ("Zürich", "Zurich"), {"hops": 2, "supporting_titles": ["Z"]}),
             BenchmarkItem("b", "Q?", ("1",))]
    for name in ("b.jsonl", "b.jsonl.gz"):
        path = write_benchmark(items, tmp_path / name)
        assert load_benchmark(path) == items
    assert gzip.decompress((tmp_path / "b.jsonl.gz").read_bytes()) == (tmp_path / "b.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl", "b.jsonl.gz"]  # no temp files left
    assert '"metadata"' not in (tmp_path / "b.jsonl").read_text().splitlines()[1]  # empty metadata: omitted


def test_write_benchmark_refuses_duplicates_and_empty(tmp_path):
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        write_benchmark([BenchmarkItem("a", "Q?", ("x",)), BenchmarkItem("a", "Q2?", ("y",))], tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match="empty benchmark"):
        write_benchmark([], tmp_path / "e.jsonl")
    assert not list(tmp_path.iterdir())


def test_benchmark_item_takes_a_list_of_answers_but_not_a_string():
    assert BenchmarkItem("a", "Q?", ["x", "y"]).golden_answers == ("x", "y")
    with pytest.raises(ValueError, match="golden_answers must be a list"):
        BenchmarkItem("a", "Q?", "xy")


# --- converters: one real excerpt each ----------------------------------------------------------------------------


def test_flashrag_keeps_ids_and_metadata():
    items = from_flashrag(FIXTURES / "reason_over_search/popqa_test.jsonl")
    assert [i.id for i in items] == ["test_10207", "test_2923", "test_8203"]
    assert items[0].golden_answers == ("Ralph Rainger", "Ralph Reichenthal")
    assert items[0].metadata["o_wiki_title"] == "Ralph Rainger"


def test_flashrag_strips_answer_whitespace():
    items = from_flashrag(FIXTURES / "reason_over_search/bamboogle_test.jsonl")
    assert [i.id for i in items] == ["test_73", "test_74", "test_75"]
    assert items[1].golden_answers == ("George VI",)  # "George VI\n" in the source


def test_r1searcher_ids_come_from_file_stem_and_idx():
    items = from_r1searcher(FIXTURES / "r1_searcher/musique_500.jsonl")
    assert [i.id for i in items] == ["musique_500-1", "musique_500-2", "musique_500-3"]
    assert all(len(i.golden_answers) == 1 and i.metadata == {} for i in items)


def test_hotpotqa_rpt_split_filter_and_doc_ids_match_the_shipped_set():
    path = FIXTURES / "derived/hotpotqa_rpt_questions.jsonl"
    assert len(from_hotpotqa_rpt(path)) == 4
    test = from_hotpotqa_rpt(path, split="test")
    assert len(test) == 3
    shipped = {i.id: i for i in load_benchmark(benchmark_path("hotpotqa-test"))}
    for item in test:
        twin = shipped[item.id]
        assert (item.question, item.golden_answers) == (twin.question, twin.golden_answers)  # incl. stripped question
        assert item.metadata | twin.metadata == item.metadata  # same shared keys and values
        assert item.metadata["level"] == "hard" and item.metadata["supporting_facts"]
    with pytest.raises(ValueError, match="no questions"):
        from_hotpotqa_rpt(path, split="train")


def test_2wiki_fastgraphrag_keeps_gold_titles():
    items = from_2wiki_fastgraphrag(FIXTURES / "derived/2wiki_fastgraphrag101_questions.jsonl")
    assert items[0].id == "2wiki-fg-0" and items[0].golden_answers == ("Diriyah",)
    assert items[0].metadata == {"supporting_titles": ["Abdul-Aziz bin Muhammad", "Muhammad bin Saud"],
                                 "source_split": "dev"}


def test_musique_hipporag_aliases_are_golds_and_hops_are_metadata():
    items = from_musique_hipporag(FIXTURES / "derived/musique_hipporag_train100_questions.jsonl")
    assert items[0].golden_answers == ("G. Stanley Hall", "Stanley Hall")
    assert [i.metadata["hops"] for i in items] == [2, 4, 3]
    assert all(len(i.metadata["question_decomposition"]) == i.metadata["hops"] for i in items)
    assert all("supporting_paragraphs" not in i.metadata for i in items)


def test_frames():
    items = from_frames(FIXTURES / "skillorchestra_frames/frames.jsonl")
    assert [i.id for i in items] == ["wiki____0", "wiki____1", "wiki____2"]
    assert items[0].golden_answers == ("Jane Ballou",)
    assert not items[0].question.endswith(" ")  # the source ends this question with a space


def test_agentic_rag_list_and_string_answers():
    nq = from_agentic_rag(FIXTURES / "agentic_rag_qa/nq_test_questions_and_answers.json")
    assert nq[0].id == "nq_test_questions_and_answers-0"
    assert nq[0].golden_answers == ("14 December 1972 UTC", "December 1972")
    hotpot = from_agentic_rag(FIXTURES / "agentic_rag_qa/hotpotqa_test_questions_and_answers.json")
    assert [i.golden_answers for i in hotpot][0] == ("yes",)


def test_deepresearcher_keeps_the_source_and_filters_by_it():
    path = FIXTURES / "derived/deepresearcher_test.jsonl"
    items = from_deepresearcher(path)
    assert [i.metadata["data_source"] for i in items] == ["2wiki", "popqa", "tq", "Bamboogle", "nq"]
    only = from_deepresearcher(path, source="bamboogle")  # case-insensitive
    assert [i.id for i in only] == ["Bamboogle_39"]
    with pytest.raises(ValueError, match=r"no data_source 'hotpotqa'.*'Bamboogle', 'nq'"):
        from_deepresearcher(path, source="hotpotqa")


def test_sage_qa_keeps_generation_metadata(sage_qa_jsonl):
    items = from_sage(sage_qa_jsonl)
    assert [(i.id, i.question, i.golden_answers) for i in items] == [
        ("sage-0-r1", "Which city hosted event 0?", ("Tulsa",)),  # trailing space of the question stripped
        ("sage-1-r1", "Which city hosted event 1?", ("Paris",)),
    ]
    meta = items[1].metadata
    assert (meta["target_steps"], meta["min_searches"], meta["round"]) == (3, 3, 1)
    assert meta["evidence_doc_ids"] == ["hotpotqa-1", "hotpotqa-9"]
    assert "answer" not in meta and "golden_answers" not in meta


def test_bamboogle_csv_second_answer_lost_quotes_and_intermediate_answer():
    items = from_bamboogle_csv(FIXTURES / "bamboogle_original/bamboogle_prerelease_sheet1.csv")
    assert items[1].golden_answers == ("Mildred Warner", "Mildred Gale")
    assert items[2].question == 'When was the person who said "Now, I am become Death, the destroyer of worlds." born?'
    assert items[2].golden_answers == ("22-Apr-04",)  # the sheet's own date mangling; the jsonl has "April 22, 1904"
    inter = from_bamboogle_csv(FIXTURES / "bamboogle_original/bamboogle_prerelease_sheet1_inter.csv")
    assert [i.metadata["intermediate_answer"] for i in inter] == ["1812", "voyager 2", "Best Buy"]
    assert inter[0].id == "bamboogle_prerelease_sheet1_inter-0"


def test_converter_errors_name_the_row(tmp_path):
    rows = [{"idx": 1, "question": "Q?", "answer": "a"}, {"idx": 2, "question": "Q?"}]
    path = _write_lines(tmp_path / "r1.jsonl", rows)
    with pytest.raises(ValueError, match=r"r1\.jsonl:2: missing field 'answer'"):
        from_r1searcher(path)
    path = _write_lines(tmp_path / "fr.jsonl", [{"id": "x", "question": "Q?", "answer": "a"}] * 2)
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        from_frames(path)


# --- CLI --------------------------------------------------------------------------------------------------------


def test_every_format_has_a_fixture():
    assert set(FORMAT_FIXTURES) | {"sage"} == set(CONVERTERS)


@pytest.mark.parametrize("fmt", sorted(FORMAT_FIXTURES))
def test_cli_convert_round_trip(tmp_path, fmt, capsys):
    source = FIXTURES / FORMAT_FIXTURES[fmt]
    out = tmp_path / "set.jsonl"
    assert main(["convert", "--format", fmt, str(source), str(out)]) == 0
    assert load_benchmark(out) == CONVERTERS[fmt](source)
    assert "data_source 'set'" in capsys.readouterr().out


def test_cli_convert_sage_with_filters_and_misuse(tmp_path, sage_qa_jsonl):
    main(["convert", "--format", "sage", str(sage_qa_jsonl), str(tmp_path / "s.jsonl")])
    assert load_benchmark(tmp_path / "s.jsonl") == from_sage(sage_qa_jsonl)
    main(["convert", "--format", "hotpotqa-rpt", "--split", "dev",
          str(FIXTURES / FORMAT_FIXTURES["hotpotqa-rpt"]), str(tmp_path / "h.jsonl.gz")])
    assert len(load_benchmark(tmp_path / "h.jsonl.gz")) == 1
    main(["convert", "--format", "deepresearcher", "--source", "nq",
          str(FIXTURES / FORMAT_FIXTURES["deepresearcher"]), str(tmp_path / "dr-nq.jsonl")])
    assert [i.metadata["data_source"] for i in load_benchmark(tmp_path / "dr-nq.jsonl")] == ["nq"]
    with pytest.raises(SystemExit):
        main(["convert", "--format", "frames", "--split", "test", str(sage_qa_jsonl), str(tmp_path / "x.jsonl")])


def test_cli_list_shows_every_shipped_set(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, count in [("bamboogle", 125), ("hotpotqa-test", 500), ("hotpotqa-dev", 300)]:
        assert f"{name}\t{count}\t" in out


def test_python_dash_m_entry_point(tmp_path):
    out = tmp_path / "frames.jsonl"
    source = FIXTURES / FORMAT_FIXTURES["frames"]
    cmd = [sys.executable, "-m", "sage_rl.benchmarks", "convert", "--format", "frames", str(source), str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert load_benchmark(out) == from_frames(source)


# --- training parquet (`verl --split train`): Search-R1's NQ + HotpotQA files --------------------------------------

TRAIN_FIXTURES = Path(__file__).resolve().parents[1] / "assets" / "train"


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("name", ["nq", "hotpotqa"])
def test_cli_writes_flashrag_training_files_as_search_prompt_parquet(tmp_path, name, capsys):
    """FlashRAG train file -> convert -> verl --split train: the rows Search-R1's qa_search_train_merge.py makes."""
    from sage_rl.protocol import search_prompt

    bench = tmp_path / f"{name}.jsonl"
    main(["convert", "--format", "flashrag", str(TRAIN_FIXTURES / f"{name}.jsonl"), str(bench)])
    out = tmp_path / "train" / f"{name}.parquet"
    assert main(["verl", "--split", "train", str(bench), str(out)]) == 0
    assert f"train data, data_source '{name}'" in capsys.readouterr().out
    rows, items = _parquet_rows(out), load_benchmark(bench)
    assert [r["extra_info"]["qid"] for r in rows] == [i.id for i in items]
    for i, (row, item) in enumerate(zip(rows, items, strict=True)):
        assert row["data_source"] == name
        assert row["prompt"] == [{"role": "user", "content": search_prompt(item.question)}]
        assert row["reward_model"]["ground_truth"]["target"] == list(item.golden_answers)
        assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == i


def test_training_rows_are_the_validation_rows_but_for_the_split(tmp_path):
    """One set reads the same in training and in validation, so train/val metrics are comparable."""
    bench = tmp_path / "nq.jsonl"
    main(["convert", "--format", "flashrag", str(TRAIN_FIXTURES / "nq.jsonl"), str(bench)])
    main(["verl", "--split", "train", str(bench), str(tmp_path / "train.parquet")])
    main(["verl", str(bench), str(tmp_path / "val.parquet")])
    train, val = _parquet_rows(tmp_path / "train.parquet"), _parquet_rows(tmp_path / "val.parquet")
    assert [r["extra_info"].pop("split") for r in train] == ["train"] * 3
    assert [r["extra_info"].pop("split") for r in val] == [""] * 3
    assert train == val


def test_training_parquet_refuses_a_shipped_evaluation_set(tmp_path):
    with pytest.raises(ValueError, match="'bamboogle' is a shipped evaluation set"):
        main(["verl", "--split", "train", "bamboogle", str(tmp_path / "b.parquet")])
    assert not (tmp_path / "b.parquet").exists()
