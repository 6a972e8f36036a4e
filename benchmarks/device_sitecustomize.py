# Used by benchmarks/device_check.sh only (installed as sitecustomize.py on the GPU machine).
# Device-only shim: RecBole 1.2.1 (and the MMRec reference) use NumPy 1 aliases that NumPy 2
# removed. The GPU image's SciPy needs NumPy 2, so the aliases are restored instead.
import numpy as _np

for _name, _value in {"float_": _np.float64, "complex_": _np.complex128, "NaN": _np.nan, "Inf": _np.inf,
                      "NINF": -_np.inf, "PINF": _np.inf, "infty": _np.inf, "product": _np.prod,
                      "cumproduct": _np.cumprod, "round_": _np.round, "string_": _np.bytes_,
                      "unicode_": _np.str_, "sometrue": _np.any, "alltrue": _np.all,
                      "float": float, "int": int, "bool": bool, "object": object}.items():
    if _name not in _np.__dict__:
        setattr(_np, _name, _value)
