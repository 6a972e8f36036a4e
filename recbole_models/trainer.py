"""RecBole trainers whose checkpoints load with ``torch.load(weights_only=True)``.

RecBole 1.2.1 saves its ``Config`` object inside every checkpoint, which
``torch.load`` refuses since torch 2.6 (``weights_only=True`` by default), so
``Trainer.evaluate(load_best_model=True)`` fails. Here the checkpoint holds only
tensors, numbers and strings: the model's ``state_dict``, the optimiser state,
the epoch, and the config as a plain ``{key: str|int|float|bool|None|list|dict}``
mapping. The safety switch of ``torch.load`` is never turned off.
"""
import numbers
import os
import uuid

import torch
from recbole.utils import get_trainer as recbole_get_trainer


def plain_config(config) -> dict:
    """The config's final values as plain Python data (anything else becomes ``str``)."""

    def plain(value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return str(value)

    return {str(k): plain(v) for k, v in config.final_config_dict.items()}


class SafeCheckpointMixin:
    """Mixed in front of a RecBole trainer class; also records the best epoch."""

    best_epoch = -1

    def __init__(self, config, model):
        super().__init__(config, model)
        if config["single_spec"]:
            # RecBole names the file <model>-<local time to the second>.pth: two runs of
            # one model started in the same second (``compare --jobs``, two shells)
            # would overwrite each other's best checkpoint and test the wrong one.
            # Distributed ranks keep RecBole's name: every rank must load rank 0's file.
            base, ext = os.path.splitext(self.saved_model_file)
            self.saved_model_file = f"{base}-{uuid.uuid4().hex[:8]}{ext}"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        # RecBole saves a checkpoint exactly when the validation score improves.
        self.best_epoch = epoch
        state = {
            "config": plain_config(self.config),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        torch.save(state, saved_model_file)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")


_CACHE = {}


def get_trainer(model_type, model_name):
    """RecBole's trainer for the model, with weights-only checkpoints."""
    base = recbole_get_trainer(model_type, model_name)
    if base not in _CACHE:
        _CACHE[base] = type(f"Safe{base.__name__}", (SafeCheckpointMixin, base), {})
    return _CACHE[base]
