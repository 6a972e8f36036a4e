"""Keeps RecBole 1.2.1's own models running on the SciPy this project installs.

RecBole's LightGCN, NGCF, GCMC, SpectralCF, NCL, KGIN and MCCLK build their
adjacency with ``scipy.sparse.dok_matrix._update(dict)``, a private method that
SciPy removed in 1.12 (``AttributeError: 'dok_matrix' object has no attribute
'_update'``). SciPy's DOK still keeps its entries in the ``_dict`` mapping, so
the method is restored as the same bulk update. Applied once, on import of
:mod:`recbole_models`; a SciPy that has the method is left alone.
"""
import scipy.sparse as sp


def _dok_update(self, data):
    self._dict.update(data)


def apply() -> None:
    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is not None and not hasattr(cls, "_update") and hasattr(cls((1, 1)), "_dict"):
            cls._update = _dok_update
