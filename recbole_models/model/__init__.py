"""Models of this package, one per file (``recbole_models.model.<lower name>``).

:data:`MODELS` maps each name to its class; ``recbole_models.get_model`` looks
here first, then in RecBole. A new model adds one import and one entry.
"""
from recbole_models.model.freedom import FREEDOM
from recbole_models.model.lattice import LATTICE
from recbole_models.model.mllmrec import MLLMRec
from recbole_models.model.smore import SMORE

MODELS = {
    "MLLMRec": MLLMRec,
    "FREEDOM": FREEDOM,
    "SMORE": SMORE,
    "LATTICE": LATTICE,
}

__all__ = ["MODELS"] + sorted(MODELS)
