from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from retrieval_server.corpus import CorpusFormatError, DocStore, DocStoreWriter, Passage, corpus_stats, iter_corpus


def test_docstore_round_trip_and_raw_bytes(tmp_path: Path, small_corpus: Path) -> None:
    writer = DocStoreWriter(tmp_path)
    passages = list(iter_corpus(small_corpus))
    for p in passages:
        writer.add(p)
    assert writer.close() == len(passages)
    store = DocStore(tmp_path)
    assert len(store) == len(passages)
    for i in (0, 17, len(passages) - 1):
        assert store.get(i) == passages[i]
        assert orjson.loads(store.raw(i)) == {"id": passages[i].id, "contents": passages[i].contents}
    store.close()


def test_gz_and_plain_share_checksum(tmp_path: Path, small_corpus: Path) -> None:
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(small_corpus.read_bytes()))
    assert corpus_stats(gz) == corpus_stats(small_corpus)
    assert list(iter_corpus(gz)) == list(iter_corpus(small_corpus))
    assert corpus_stats(small_corpus)[1] == len(small_corpus.read_bytes().splitlines())


def test_unicode_and_int_ids_survive(tmp_path: Path) -> None:
    writer = DocStoreWriter(tmp_path)
    writer.add(Passage(id=7, contents='"Zürich"\nüber — "quoted"\n2nd line'))
    writer.close()
    assert DocStore(tmp_path).get(0) == Passage(id=7, contents='"Zürich"\nüber — "quoted"\n2nd line')


def test_bad_row_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "contents": "x"}\n{"id": "2", "text": "no contents"}\n')
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:2"):
        list(iter_corpus(bad))


def test_title_text_rows_become_search_r1_contents(tmp_path: Path) -> None:
    path = tmp_path / "tt.jsonl"
    path.write_text('{"id": "c-1", "title": "Paris", "text": "Capital of France.", "source": "x"}\n')
    assert list(iter_corpus(path)) == [Passage(id="c-1", contents='"Paris"\nCapital of France.')]
