"""Models of this package, one per file (``recbole_models.model.<lower name>``).

:data:`MODELS` maps each name to its class; ``recbole_models.get_model`` looks
here first, then in RecBole. A new model adds one import and one entry.
"""
from recbole_models.model.freedom import FREEDOM
from recbole_models.model.gume import GUME
from recbole_models.model.lattice import LATTICE
from recbole_models.model.lgmrec import LGMRec
from recbole_models.model.mllmrec import MLLMRec
from recbole_models.model.slmrec import SLMRec
from recbole_models.model.smore import SMORE
from recbole_models.model.soil import SOIL
from recbole_models.model.vbpr import VBPR

MODELS = {
    "LGMRec": LGMRec,
    "MLLMRec": MLLMRec,
    "SLMRec": SLMRec,
    "VBPR": VBPR,
    "GUME": GUME,
    "SOIL": SOIL,
    "FREEDOM": FREEDOM,
    "SMORE": SMORE,
    "LATTICE": LATTICE,
}

__all__ = ["MODELS"] + sorted(MODELS)
