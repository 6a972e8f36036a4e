"""Silent damage to data (issue 9 §4): every case here was accepted or mangled without a
word before; each is now an error naming the file (and line or id), or read right."""
import gzip
import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.amazon import prepare_amazon, read_reviews
from mllmrec_pyg.datasets.atomic import OutputExistsError
from mllmrec_pyg.datasets.mmrec import export_mmrec, import_mmrec, read_feature_file, read_mmrec_inter
from mllmrec_pyg.text.io import read_texts
from mllmrec_pyg.text.item_text import item_texts, read_atomic
from test_datasets_amazon import write_amazon_fixture
from test_datasets_mmrec import write_mmrec_fixture

BOM = "\ufeff"


def snapshot(root):
    """``{relative path: sha256}`` of every file under ``root``."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def set_inter_cell(path, line, column, value):
    """Rewrites one cell of a tab-separated file (``line`` 1-based, header = line 1)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    header = lines[0].split("\t")
    cells = lines[line - 1].split("\t")
    cells[header.index(column)] = value
    lines[line - 1] = "\t".join(cells)
    open(path, "w", encoding="utf-8").write("\n".join(lines))


# ---- ids that overflow int64 -----------------------------------------------------------

def test_mmrec_import_refuses_ids_beyond_int64_naming_file_and_line(tmp_path, capsys):
    src = tmp_path / "src"
    write_mmrec_fixture(src)
    inter = str(src / "toymm.inter")
    set_inter_cell(inter, 7, "userID", "99999999999999999999999")
    with pytest.raises(ValueError, match=r"toymm\.inter, line 7: column 'userID' .*99999999999999999999999.*64-bit"):
        read_mmrec_inter(inter)
    out = tmp_path / "data" / "toymm"
    assert cli_main(["mmrec", "import", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 7" in err and "64-bit" in err and "Traceback" not in err
    assert not out.exists()


def test_mmrec_ids_above_2_pow_53_keep_every_digit(tmp_path):
    # Through float64 (the old parser) 2**53 + 1 became 2**53.
    src = tmp_path / "src"
    write_mmrec_fixture(src)
    os.remove(src / "user_preferences_feat.npy")  # row r = user r: not for sparse huge ids
    inter = str(src / "toymm.inter")
    set_inter_cell(inter, 2, "userID", str(2 ** 53 + 1))
    frame = read_mmrec_inter(inter)
    assert frame["user"].iloc[0] == 2 ** 53 + 1
    set_inter_cell(inter, 2, "userID", str(2 ** 63 - 1))  # the largest int64 still fits
    assert read_mmrec_inter(inter)["user"].iloc[0] == 2 ** 63 - 1


# ---- export checks what it writes --------------------------------------------------------

def imported(tmp_path):
    src = tmp_path / "src"
    write_mmrec_fixture(src)
    ds = tmp_path / "data" / "toymm"
    import_mmrec(str(src), str(ds))
    return ds


def test_mmrec_export_refuses_nan_feature_rows(tmp_path, capsys):
    ds = imported(tmp_path)
    feat = str(ds / "toymm.textemb")
    lines = open(feat).read().split("\n")
    token = lines[3].split("\t")[0]
    values = lines[3].split("\t")[1].split()
    values[2] = "nan"
    lines[3] = token + "\t" + " ".join(values)
    open(feat, "w").write("\n".join(lines))
    out = tmp_path / "mmrec" / "toymm"
    with pytest.raises(ValueError, match=rf"toymm\.textemb, line 4: item '{token}' has NaN"):
        export_mmrec(str(ds), str(out))
    assert not out.exists()
    assert cli_main(["mmrec", "export", str(ds), "--out", str(out)]) == 2
    assert "NaN" in capsys.readouterr().err and not out.exists()


def test_mmrec_export_refuses_a_non_numeric_rating(tmp_path):
    ds = imported(tmp_path)
    set_inter_cell(str(ds / "toymm.valid.inter"), 3, "rating:float", "n/a")
    with pytest.raises(ValueError, match=r"toymm\.valid\.inter, line 3: rating must be a finite number"):
        export_mmrec(str(ds), str(tmp_path / "out" / "toymm"))


# ---- an output that is (or contains) the input --------------------------------------------

def test_export_onto_its_own_input_is_refused_and_deletes_nothing(tmp_path, capsys):
    ds = imported(tmp_path)
    before = snapshot(ds)
    with pytest.raises(OutputExistsError, match="is the input"):
        export_mmrec(str(ds), str(ds), overwrite=True)
    assert cli_main(["mmrec", "export", str(ds), "--out", str(ds), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    # The parent of the input contains it.
    assert cli_main(["mmrec", "export", str(ds), "--out", str(ds.parent), "--overwrite"]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert snapshot(ds) == before


def test_import_and_prepare_refuse_an_output_holding_their_input(tmp_path):
    ds = imported(tmp_path)
    # The MMRec source copied into an earlier output of ours, then imported onto it.
    inner = ds / "raw"
    write_mmrec_fixture(inner)
    before = snapshot(ds)
    with pytest.raises(OutputExistsError, match="contains the input"):
        import_mmrec(str(inner), str(ds), name="toymm", overwrite=True)
    reviews, meta, _ = write_amazon_fixture(str(ds / "amazon"))
    before = snapshot(ds)
    with pytest.raises(OutputExistsError, match="contains the input"):
        prepare_amazon(reviews, str(ds), meta=meta, name="toymm", overwrite=True)
    assert snapshot(ds) == before


# ---- BOM and undecodable bytes --------------------------------------------------------------

def test_bom_prefixed_inputs_read_their_first_field_right(tmp_path):
    csv = tmp_path / "ratings_Toy.csv"
    csv.write_text(BOM + "U0,I0,5.0,1300000000\nU1,I0,4.0,1300000001\n", encoding="utf-8")
    frame = read_reviews(str(csv))
    assert frame["user"].tolist() == ["U0", "U1"] and len(frame) == 2
    gz = tmp_path / "ratings_Toy.csv.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(BOM + "U0,I0,5.0,1300000000\n")
    assert read_reviews(str(gz))["user"].tolist() == ["U0"]

    item = tmp_path / "x.item"
    item.write_text(BOM + "item_id:token\tmovie_title:token_seq\ni1\tHeat\n", encoding="utf-8")
    assert item_texts(str(item)) == {"i1": "Title: Heat."}
    texts = tmp_path / "u.jsonl"
    texts.write_text(BOM + '{"user_id": "u1", "text": "likes heat"}\n', encoding="utf-8")
    assert read_texts(str(texts), "user_id") == {"u1": "likes heat"}

    src = tmp_path / "src"
    write_mmrec_fixture(src)
    path = src / "toymm.inter"
    path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert len(read_mmrec_inter(str(path))) > 0


def latin1_on_line_11(path, header, row):
    body = "".join(header if i == 0 else row.format(i=i) for i in range(10)).encode("utf-8")
    with open(path, "wb") as f:
        f.write(body + row.format(i="caf\xe9").encode("latin-1") + row.format(i=99).encode("utf-8"))


@pytest.mark.parametrize("kind", ["ratings csv", "gzip ratings csv", "atomic", "jsonl"])
def test_undecodable_byte_is_reported_on_its_real_line(tmp_path, kind):
    if kind.endswith("ratings csv"):
        path = tmp_path / "ratings_Toy.csv"
        latin1_on_line_11(path, "U0,I0,5.0,1300000000\n", "U{i},I0,5.0,1300000000\n")
        if kind.startswith("gzip"):
            gz = tmp_path / "ratings_Toy.csv.gz"
            gz.write_bytes(gzip.compress(path.read_bytes()))
            path = gz
        read = read_reviews
    elif kind == "atomic":
        path = tmp_path / "x.inter"
        latin1_on_line_11(path, "user_id:token\titem_id:token\n", "u{i}\ti1\n")
        read = read_atomic
    else:
        path = tmp_path / "u.jsonl"
        latin1_on_line_11(path, '{"user_id": "u0", "text": "t"}\n', '{{"user_id": "u{i}", "text": "t"}}\n')
        read = lambda p: read_texts(p, "user_id")  # noqa: E731
    with pytest.raises(ValueError, match=rf"{path.name}, line 11: not UTF-8 \(byte 0xe9"):
        read(str(path))


# ---- duplicate ids -------------------------------------------------------------------------

def test_duplicate_item_in_item_file_is_an_error_for_encode(tmp_path, capsys):
    d = tmp_path / "mini"
    d.mkdir()
    (d / "mini.item").write_text("item_id:token\tmovie_title:token_seq\ni1\tHeat\ni2\tAlien\ni1\tHeat 2\n")
    (d / "mini.train.inter").write_text("user_id:token\titem_id:token\nu1\ti1\nu1\ti2\n")
    with pytest.raises(ValueError, match=r"mini\.item, line 4: item 'i1' appears twice \(first on line 2\)"):
        item_texts(str(d / "mini.item"))
    assert cli_main(["encode", str(d), "--user-texts", "none"]) == 2
    err = capsys.readouterr().err
    assert "mini.item, line 4: item 'i1' appears twice" in err
    assert not (d / "mini.itememb").exists()


def test_duplicate_item_in_feature_file_is_an_error_for_graph(tmp_path, capsys):
    d = tmp_path / "mini"
    d.mkdir()
    rng = np.random.default_rng(0)
    rows = ["iid:token\titem_emb:float_seq"]
    for i in list(range(10)) + [3]:  # 11 rows, 10 items: item 3 twice
        rows.append(f"i{i}\t" + " ".join(f"{v:.5f}" for v in rng.normal(size=8)))
    (d / "mini.itememb").write_text("\n".join(rows) + "\n")
    inter = pd.DataFrame({"user_id:token": [f"u{u}" for u in range(5) for _ in range(4)],
                          "item_id:token": [f"i{(u * 3 + k) % 10}" for u in range(5) for k in range(4)]})
    inter.to_csv(d / "mini.train.inter", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"mini\.itememb, line 12: id 'i3' appears twice \(first on line 5\)"):
        read_feature_file(str(d / "mini.itememb"))
    assert cli_main(["graph", str(d)]) == 2
    err = capsys.readouterr().err
    assert "mini.itememb, line 12: id 'i3' appears twice" in err and "Traceback" not in err
