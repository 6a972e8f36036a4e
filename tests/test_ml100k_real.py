"""A real run: MovieLens-100k split files, real MiniLM features, MLLMRec for a few epochs."""
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mllmrec_on_ml100k_with_minilm_features(tmp_path, monkeypatch):
    from mllmrec_pyg.text.encoder import encode_dataset
    from recbole_models.run import run_recbole

    monkeypatch.setattr(sys, "argv", ["pytest"])
    d = tmp_path / "ml-100k"
    d.mkdir()
    for f in ("ml-100k.item", "ml-100k.train.inter", "ml-100k.valid.inter", "ml-100k.test.inter"):
        shutil.copy(os.path.join(REPO, "data", "ml-100k", f), d / f)
    written = encode_dataset(str(d), user_texts="history", show_progress=False)
    assert set(written) == {"item", "user"}
    result = run_recbole("MLLMRec", "ml-100k", [os.path.join(REPO, "data", "ml-100k.yaml")],
                         {"data_path": str(tmp_path), "epochs": 3, "checkpoint_dir": str(tmp_path / "saved")})
    # Popularity-free random ranking gives Recall@20 of about 20 / 1682 = 0.012.
    assert result["test_result"]["recall@20"] > 0.1
