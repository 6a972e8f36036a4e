"""Texts of items and users, and their sentence embeddings (the features of MLLMRec).

- :mod:`~mllmrec_pyg.text.io`: the JSONL text files exchanged between stages.
- :mod:`~mllmrec_pyg.text.item_text`: item descriptions fused from a RecBole ``.item`` file.
- :mod:`~mllmrec_pyg.text.encoder`: sentence-transformers encoding with a resumable cache,
  and :func:`encode_dataset`, which writes RecBole feature files.
"""
from mllmrec_pyg.text.io import read_texts, write_texts
from mllmrec_pyg.text.item_text import item_texts, read_atomic

__all__ = ["read_texts", "write_texts", "item_texts", "read_atomic"]
