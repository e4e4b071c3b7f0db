"""What the index-build tests share: the files a build writes, and an encoder that counts (and can kill) a build."""

import numpy as np

from retrieval_server.encoder import HashingEncoder

INDEX_FILES = ["dense.faiss", "docs.jsonl", "offsets.npy", "bm25/data.csc.index.npy", "bm25/vocab.index.json"]


class CountingEncoder(HashingEncoder):
    """Counts passage-encoding calls; raises on call `fail_at` (a build killed mid-way)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(64)
        self.calls, self.fail_at = 0, fail_at

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        if len(texts) > 1:  # not the manifest's probe text
            self.calls += 1
            if self.calls == self.fail_at:
                raise KeyboardInterrupt("killed")
        return super().encode_passages(texts)
