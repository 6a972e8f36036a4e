"""Models of this package, one per file (``recbole_models.model.<lower name>``)."""
from recbole_models.model.mllmrec import MLLMRec

__all__ = ["MLLMRec"]
