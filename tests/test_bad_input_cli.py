"""Reliability suite, the ``mllmrec`` command itself and its other sub-commands: one-line
usage errors, ``--version``, ``--debug`` / ``MLLMREC_DEBUG``, an ``.npy`` header that
declares 10^11 rows (``mmrec import``), and ``graph --save`` (subprocesses)."""
import io
import os

import numpy as np
import pytest
from bad_input import ROOT, assert_one_line_error, check_bad_input, cli_env, run_cli, write_toy


def test_version_from_package_metadata(tmp_path):
    from mllmrec_pyg.cli import _version

    proc = run_cli(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mllmrec {_version()}"
    assert _version().split(".")[0].isdigit()


def test_usage_errors_are_one_line(tmp_path):
    check_bad_input(tmp_path, ["no-such-command"], "no-such-command")
    check_bad_input(tmp_path, ["prepare"], "prepare")
    check_bad_input(tmp_path, ["graph", "toy", "--k", "ten"], "--k", "ten")


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("dataset_dir: [x\n")
    quiet = run_cli(["pipeline", "--config", "bad.yaml"], tmp_path)
    assert_one_line_error(quiet, "bad.yaml", "YAML")
    for proc in (run_cli(["pipeline", "--config", "bad.yaml", "--debug"], tmp_path),
                 run_cli(["--debug", "pipeline", "--config", "bad.yaml"], tmp_path),
                 run_cli(["pipeline", "--config", "bad.yaml"], tmp_path, env=cli_env(MLLMREC_DEBUG="1"))):
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "yaml" in proc.stderr


def _npy_with_header(path, declared_shape, data: np.ndarray):
    header = np.lib.format.header_data_from_array_1_0(data)
    header["shape"] = declared_shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + data.tobytes())


def test_mmrec_import_npy_header_declaring_1e11_rows(tmp_path):
    """Was a MemoryError (1.5 TiB requested) naming no file: now the header is checked
    against the file size before anything is allocated."""
    src = tmp_path / "mm"
    src.mkdir()
    rows = [f"{u}\t{(u + i) % 6}\t5\t{i}\t{0 if i < 3 else (1 if i == 3 else 2)}" for u in range(4) for i in range(5)]
    (src / "mm.inter").write_text("userID\titemID\trating\ttimestamp\tx_label\n" + "\n".join(rows) + "\n")
    _npy_with_header(src / "text_feat.npy", (100_000_000_000, 4), np.zeros((6, 4), dtype=np.float32))
    check_bad_input(tmp_path, ["mmrec", "import", "mm", "--out", "out"],
                    os.path.join("mm", "text_feat.npy"), "100000000000", "96 bytes")


def test_read_npy_header_accepts_a_true_header_and_refuses_pickles(tmp_path):
    from mllmrec_pyg.errors import InputError
    from mllmrec_pyg.npy import load_npy

    np.save(tmp_path / "ok.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    assert load_npy(str(tmp_path / "ok.npy")).shape == (3, 4)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy.*objects"):
        load_npy(str(tmp_path / "obj.npy"))
    (tmp_path / "short.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:-4])
    with pytest.raises(InputError, match="short.npy.*truncated"):
        load_npy(str(tmp_path / "short.npy"))


def test_graph_help_shows_defaults(tmp_path):
    out = run_cli(["graph", "--help"], tmp_path).stdout
    for text in ("(default 10)", "(default 0.7)", "(default itememb)"):
        assert text in " ".join(out.split()), text


def test_graph_save_loads_weights_only_and_round_trips(tmp_path):
    import torch
    from torch_geometric.data import Data

    d = write_toy(tmp_path / "toy", users=6, items=10)
    rng = np.random.default_rng(0)
    with open(os.path.join(d, "toy.itememb"), "w") as f:
        f.write("iid:token\titememb:float_seq\n")
        for i in range(10):
            f.write(f"{i}\t" + " ".join(f"{v:.5f}" for v in rng.random(8)) + "\n")
    check_bad_input(tmp_path, ["graph", "toy", "--save", "nodir/g.pt"], "nodir/g.pt", "directory")
    check_bad_input(tmp_path, ["graph", "toy", "--save", "toy"], "toy", "directory")
    proc = run_cli(["graph", "toy", "--k", "3", "--cooc-k", "3", "--save", "g.pt"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["g.pt", "toy"]  # no temporary file left
    saved = torch.load(tmp_path / "g.pt", weights_only=True)
    graph = Data.from_dict(saved)
    assert graph.item_tokens == [str(i) for i in range(10)] and graph.num_items == 10 and graph.num_users == 6
    assert graph.x.shape == (10, 8) and graph.edge_index.size(1) == graph.edge_weight.numel() > 0
    assert graph.inter_index.size(1) == 18
    # The same build, in this process, gives the same graph.
    from mllmrec_pyg.transforms import JaccardCooccurrence, ThresholdKNN, Union
    from torch_geometric.transforms import Compose

    again = Compose([ThresholdKNN(k=3, threshold=0.7), JaccardCooccurrence(k=3), Union()])(
        Data(x=graph.x, inter_index=graph.inter_index, num_users=6, num_items=10))
    assert torch.equal(again.edge_index, graph.edge_index) and torch.allclose(again.edge_weight, graph.edge_weight)
