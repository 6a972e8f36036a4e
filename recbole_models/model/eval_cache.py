r"""An evaluation cache that cannot outlive the weights it was computed from.

``full_sort_predict`` of a model whose item side costs a full pass (a tower, a
graph propagation) should compute it once per evaluation, not once per user
batch. RecBole's own models keep such a cache in attributes that
``calculate_loss`` clears; that leaves every other way weights change
(``load_state_dict`` when RecBole loads the best checkpoint before the test,
``load_other_parameter``, an optimiser step outside ``calculate_loss``, a
``.to(device)``) serving outputs of weights that no longer exist. MLLMRec's first
cache had exactly that bug: its published test scores combined the best epoch's
user tower with the item tower of the last validation epoch.

:class:`WeightKeyedCache` keys the cached value by the identity and the version
counter of every parameter and buffer of the module. PyTorch bumps a tensor's
version on each in-place write through the tensor itself: ``optimizer.step()``
(``foreach`` or not), ``load_state_dict`` (``copy_`` under ``no_grad``) and any
in-place op under ``torch.no_grad()``; ``.to()`` or ``param.data = t`` give a new
storage. One way escapes it: an in-place write through ``param.data``
(``p.data.mul_(2)``) bumps the version of the ``.data`` alias, not of ``p`` (torch
2.13), so code that edits weights that way must call :meth:`WeightKeyedCache.clear`. A lookup whose key differs recomputes, so
there is no invalidation call anyone can forget. Values are cached only in eval
mode with autograd off (what RecBole's evaluation does); otherwise they are
computed afresh, so training never sees a cached graph-less tensor.
"""
import itertools
from typing import Callable, Generic, Optional, Tuple, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def _identity(t: torch.Tensor) -> int:
    # Sparse tensors have no single data pointer; the module holds them, so their id is unique.
    return t.data_ptr() if t.layout == torch.strided else id(t)


def weights_key(module: nn.Module) -> Tuple[Tuple[int, int], ...]:
    """``(storage identity, version)`` of every parameter and buffer of ``module``."""
    return tuple((_identity(t), t._version)
                 for t in itertools.chain(module.parameters(), module.buffers()))


class WeightKeyedCache(Generic[T]):
    """One value computed from a module's weights, reused while they are unchanged."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._value: Optional[T] = None

    def get(self, module: nn.Module, compute: Callable[[], T]) -> T:
        """``compute()``, or the value it gave for exactly the current weights.

        Args:
            module: The model whose parameters and buffers ``compute`` reads.
            compute: Recomputes the value from the current weights.
        """
        if module.training or torch.is_grad_enabled():
            self.clear()
            return compute()
        key = weights_key(module)
        if key != self._key:
            self._value = compute()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None
