"""The arrows run one way: recbole_models builds on mllmrec_pyg, never the reverse
(only the command line, which drives both, imports recbole_models)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mllmrec_pyg_does_not_import_recbole_models():
    offenders = []
    package = os.path.join(ROOT, "mllmrec_pyg")
    for directory, _, files in os.walk(package):
        if os.path.relpath(directory, package).split(os.sep)[0] == "cli":
            continue
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(m == "recbole_models" or m.startswith("recbole_models.") for m in modules):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_one_home_for_the_feature_file_format():
    from mllmrec_pyg import feature_file
    from mllmrec_pyg.datasets import mmrec
    from recbole_models import features

    assert features.write_feature_file is feature_file.write_feature_file
    assert mmrec.read_feature_file is feature_file.read_feature_file
