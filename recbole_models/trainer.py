"""RecBole trainers whose checkpoints load with ``torch.load(weights_only=True)``.

RecBole 1.2.1 saves its ``Config`` object inside every checkpoint, which
``torch.load`` refuses since torch 2.6 (``weights_only=True`` by default), so
``Trainer.evaluate(load_best_model=True)`` fails. Here the checkpoint holds only
tensors, numbers and strings: the model's ``state_dict``, the optimiser state,
the epoch, and the config as a plain ``{key: str|int|float|bool|None|list|dict}``
mapping. The safety switch of ``torch.load`` is never turned off.

Checkpoint layout (a ``dict``)::

    config             plain config values (plain_config)
    epoch, cur_step    int
    best_valid_score   float
    state_dict         model.state_dict()
    other_parameter    model.other_parameter(), encoded by encode_other_parameter
                       (SciPy sparse matrices and NumPy arrays become tensors)
    optimizer          optimizer.state_dict()

:func:`load_checkpoint` reads one back into a model. The file is written to a
temporary name and renamed, so a reader never sees half a checkpoint.
"""
import numbers
import os
import uuid

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import get_trainer as recbole_get_trainer

_TAG = "__recbole_models_encoded__"


def encode_other_parameter(value):
    """``value`` (a model's ``other_parameter()``) with every SciPy sparse matrix/array
    and NumPy array/scalar replaced by tensors and plain values, recursively, so that
    ``torch.load(weights_only=True)`` reads it. :func:`decode_other_parameter` inverts it.

    A sparse matrix becomes ``{_TAG: "scipy.sparse", "format": "csc", "array": False,
    "shape": [n, m], "data", "indices", "indptr"}`` (its CSR form as tensors); an
    ``ndarray`` becomes ``{_TAG: "numpy", "matrix": False, "value": tensor}`` (``True``
    for a ``numpy.matrix``).
    """
    if sp.issparse(value):
        csr = value.tocsr()
        return {_TAG: "scipy.sparse", "format": value.format, "array": isinstance(value, sp.sparray),
                "shape": [int(n) for n in csr.shape], "data": torch.from_numpy(np.ascontiguousarray(csr.data)),
                "indices": torch.from_numpy(np.ascontiguousarray(csr.indices)),
                "indptr": torch.from_numpy(np.ascontiguousarray(csr.indptr))}
    if isinstance(value, np.ndarray):
        # EASE keeps a numpy.matrix, whose products stay 2-d: rebuild the same class.
        return {_TAG: "numpy", "matrix": isinstance(value, np.matrix),
                "value": torch.from_numpy(np.ascontiguousarray(np.asarray(value)))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: encode_other_parameter(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(encode_other_parameter(v) for v in value)
    return value


def decode_other_parameter(value):
    """Inverse of :func:`encode_other_parameter` (same SciPy format and class, NumPy arrays)."""
    if isinstance(value, dict):
        kind = value.get(_TAG)
        if kind == "scipy.sparse":
            cls = sp.csr_array if value["array"] else sp.csr_matrix
            # .cpu(): load_checkpoint maps tensors to the model's device (CUDA too).
            csr = cls((value["data"].cpu().numpy(), value["indices"].cpu().numpy(),
                       value["indptr"].cpu().numpy()), shape=tuple(value["shape"]))
            return csr.asformat(value["format"])
        if kind == "numpy":
            array = value["value"].cpu().numpy()
            return np.asmatrix(array) if value.get("matrix") else array
        return {k: decode_other_parameter(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(decode_other_parameter(v) for v in value)
    return value


def save_atomic(state: dict, path: str) -> None:
    """``torch.save`` to a temporary file, then rename: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(model, path: str, device=None) -> dict:
    """Loads checkpoint ``path`` (written by our trainers) into ``model`` with
    ``torch.load(weights_only=True)``: ``state_dict`` and the decoded ``other_parameter``.
    Returns the checkpoint dict."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(decode_other_parameter(checkpoint.get("other_parameter")))
    return checkpoint


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
        # RecBole's ensure_dir checks, then creates: two ranks starting together race on
        # it (FileExistsError seen in CI with --nproc 2); exist_ok makes it idempotent.
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        cpu_ddp = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_ddp:
            # RecBole wraps the model in DistributedDataParallel(device_ids=[local_rank]),
            # which only GPU modules accept; on the CPU (gloo) device_ids must be None.
            config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(self.model)
        if not config["single_spec"]:
            # Every rank tests rank 0's file: all take rank 0's name (RecBole's per-rank
            # name holds the local time to the second, which ranks may not agree on).
            names = [f"{os.path.splitext(self.saved_model_file)[0]}-{uuid.uuid4().hex[:8]}.pth"]
            torch.distributed.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]
        else:
            # RecBole names the file <model>-<local time to the second>.pth: two runs of
            # one model started in the same second (``compare --jobs``, two shells)
            # would overwrite each other's best checkpoint and test the wrong one.
            base, ext = os.path.splitext(self.saved_model_file)
            self.saved_model_file = f"{base}-{uuid.uuid4().hex[:8]}{ext}"

    def _state(self, epoch) -> dict:
        return {
            "config": plain_config(self.config),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": encode_other_parameter(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        # RecBole saves a checkpoint exactly when the validation score improves.
        self.best_epoch = epoch
        save_atomic(self._state(epoch), saved_model_file)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def save_pretrained_model(self, epoch, saved_model_file):
        # PretrainTrainer (RaCT's stages) saves its Config object too; RaCT's next stage
        # and the test step read the file with torch.load's weights-only default.
        save_atomic(self._state(epoch), saved_model_file)
        self.saved_model_file = saved_model_file

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(self.model, resume_file, self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        # RecBole's own loading would hand the encoded other_parameter to the model.
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            load_checkpoint(self.model, checkpoint_file, self.device)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


_CACHE = {}


def get_trainer(model_type, model_name):
    """RecBole's trainer for the model, with weights-only checkpoints."""
    base = recbole_get_trainer(model_type, model_name)
    if base not in _CACHE:
        _CACHE[base] = type(f"Safe{base.__name__}", (SafeCheckpointMixin, base), {})
    return _CACHE[base]
