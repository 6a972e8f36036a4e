"""RecBole models of MLLMRec, a registry that falls back to RecBole's own models,
and the runners ``python -m recbole_models.run`` / ``python -m recbole_models.compare``.

::

    from recbole_models import get_model
    get_model("MLLMRec")   # ours
    get_model("BPR")       # RecBole's
"""
import importlib
import os
import warnings

from recbole_models import compat, safe_data

compat.apply()
# RecBole 1.2.1 calls pandas (chained inplace fillna) and torch (cuda.amp.GradScaler) APIs
# that now warn FutureWarning on every run, which buries a run's output. Only warnings
# raised from RecBole's own modules are silenced (spawned workers import this too).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
safe_data.apply()  # never unpickle RecBole's saved/*.pth caches

from recbole_models.model import MODELS  # noqa: E402
from recbole_models.model.mllmrec import MLLMRec  # noqa: E402

__all__ = ["get_model", "model_yaml", "MODELS", "MLLMRec"]

# MODELS: our models by name; their default YAML is ``yaml/<lower name>.yaml``.

_YAML_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yaml")


def get_model(name: str):
    """The model class called ``name``: one of ours (:data:`MODELS`), else RecBole's
    (:func:`recbole.utils.get_model`, which raises ``ValueError`` for unknown names)."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in MODELS:
        return MODELS[name]
    import torch
    from recbole.utils import get_model as recbole_get_model

    # Importing RecBole's sequential SINE module switches autograd anomaly mode on for the
    # whole process (slower, and NaN-strict) as a side effect; a lookup must not do that.
    anomaly = torch.is_anomaly_enabled()
    try:
        return recbole_get_model(name)
    except ModuleNotFoundError as err:
        # RecBole looks in `exlib_recommender` last, whose package imports lightgbm and
        # xgboost: for a name that is no model at all that is the wrong error.
        if name.lower() in ("lightgbm", "xgboost"):
            raise
        raise ValueError(f"`model` [{name}] is neither one of ours ({sorted(MODELS)}) "
                         f"nor a RecBole model") from err
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


def model_yaml(name: str):
    """Path of our default YAML for model ``name``, or ``None`` (RecBole models carry their own)."""
    if name not in MODELS:
        return None
    path = os.path.join(_YAML_DIR, f"{name.lower()}.yaml")
    return path if os.path.isfile(path) else None
