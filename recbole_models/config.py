"""RecBole configuration built from typed values only, and checked before training.

RecBole 1.2.1's ``Config`` ``eval``s every string value of ``config_dict`` and of
the command line (``_convert_config_dict``), reads ``sys.argv`` on its own
(``_load_cmd_line``), loads config files with PyYAML's ``FullLoader``, and its
``create_dataset``/``data_preparation`` unpickle ``saved/*.pth`` caches. Here:

* every YAML file (our model defaults, dataset YAML, ``--config_files``, variants)
  is read by :func:`load_yaml` (``yaml.SafeLoader`` plus RecBole's resolver that
  makes ``1e-3`` a float), and every ``--key=value`` by :func:`parse_overrides`
  (the value is read as one YAML scalar/list/mapping, same loader);
* :class:`SafeConfig` never reads ``sys.argv`` and never ``eval``s: a string stays
  a string;
* unknown keys are an error (:func:`check_keys`) naming the key, where it came
  from and the closest known key; the known keys are RecBole's own
  (``recbole/properties/**/*.yaml`` and its argument lists) plus the keys of our
  model YAMLs (``recbole_models/yaml/*.yaml``);
* cache pickles are never read or written: ``save_dataset``/``save_dataloaders``
  true or a ``dataset_save_path``/``dataloaders_save_path`` is refused
  (:func:`check_no_pickles`); the loading side is :mod:`recbole_models.safe_data`;
* ``valid_metric`` must be one of the metrics the evaluator computes
  (:func:`check_valid_metric`);
* distributed runs without CUDA use the ``gloo`` backend on the CPU
  (:meth:`SafeConfig._init_device`); with CUDA RecBole's NCCL set-up is unchanged.
"""
import difflib
import glob
import os
import re
from functools import lru_cache
from typing import Dict, Iterable, List, Optional

import yaml
from recbole.config import Config


class ConfigError(ValueError):
    """A configuration mistake, with a message naming the file, key or argument."""


class TypedLoader(yaml.SafeLoader):
    """``SafeLoader`` with RecBole's float resolver, so ``1e-3`` reads as a float as in RecBole
    (YAML 1.1 wants ``1.0e-3``); unlike RecBole's ``FullLoader`` it builds no objects. The one
    YAML loader of our runner, checkpoint loader and sweeps."""


TypedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
_Loader = TypedLoader


def load_yaml_text(text: str, where: str):
    """Typed data from YAML text (safe: plain scalars, lists and mappings only)."""
    try:
        return yaml.load(text, Loader=TypedLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(err).split())}") from None


def load_yaml(path: str) -> dict:
    """The mapping in YAML file ``path`` (empty file: ``{}``); errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    data = load_yaml_text(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def split_config_files(files: Optional[Iterable[str]]) -> List[str]:
    """Config file names as RecBole's ``--config_files "a.yaml b.yaml"`` means them: each
    entry split on spaces, unless the entry itself names an existing file."""
    out: List[str] = []
    for entry in files or []:
        out.extend([entry] if os.path.isfile(entry) else entry.split())
    return out


def parse_overrides(args: Iterable[str]) -> Dict[str, object]:
    """``{key: typed value}`` from ``--key=value`` arguments; the value is YAML
    (``1e-3`` float, ``~`` None, ``[10, 20]`` list, ``{a: 1}`` mapping, else a string)."""
    out: Dict[str, object] = {}
    for arg in args:
        match = re.fullmatch(r"--([A-Za-z_][A-Za-z0-9_]*)=(.*)", arg, re.S)
        if not match:
            raise ConfigError(f"unrecognised argument {arg!r} (config overrides are --key=value)")
        key, text = match.groups()
        value = load_yaml_text(text, f"argument --{key}") if text != "" else ""
        if key in out and out[key] != value:
            raise ConfigError(f"argument --{key} given twice with different values")
        out[key] = value
    return out


_RECBOLE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("recbole").__file__)))
_OUR_YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yaml")
# Set by our runner or RecBole's distributed launcher, not in any YAML of defaults.
_RUNTIME_KEYS = {"model", "dataset", "nproc", "world_size", "ip", "port", "offset", "local_rank",
                 "config_files", "verbose", "wandb_project"}
# Dataset keys our models read that no YAML of defaults holds (a dataset's own YAML sets them).
_DATASET_KEYS = {"modalities"}  # recbole_models.model.multimodal: {modality name: preload_weight id field}


@lru_cache(maxsize=1)
def known_keys() -> frozenset:
    """Every config key RecBole or one of our models reads."""
    from recbole.utils import argument_list

    keys = set(_RUNTIME_KEYS) | _DATASET_KEYS
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    files = glob.glob(os.path.join(_RECBOLE_DIR, "recbole", "properties", "**", "*.yaml"), recursive=True)
    files += [f for f in glob.glob(os.path.join(_OUR_YAML, "*.yaml"))
              if os.path.basename(f) != "variants.yaml"]
    for path in files:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=TypedLoader)
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return frozenset(keys)


def check_keys(mapping: dict, where: str, extra: Iterable[str] = ()) -> None:
    """Raises :class:`ConfigError` for the first key of ``mapping`` no model or RecBole reads."""
    known = known_keys() | set(extra)
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ConfigError(f"{where}: unknown config key `{key}`{hint}")


def check_no_pickles(mapping: dict, where: str) -> None:
    """Refuses settings that make RecBole write or read its pickle caches."""
    for key in ("save_dataset", "save_dataloaders"):
        if mapping.get(key):
            raise ConfigError(f"{where}: `{key}: {mapping[key]}` is refused: RecBole's dataset and "
                              f"dataloader caches are pickles, which this runner never writes or loads")
    for key in ("dataset_save_path", "dataloaders_save_path"):
        if mapping.get(key) is not None:
            raise ConfigError(f"{where}: `{key}` is refused: this runner never loads pickled "
                              f"datasets or dataloaders")


def computed_metrics(config) -> List[str]:
    """Lower-case names of the scores the evaluator reports, e.g. ``recall@20``, ``auc``."""
    from recbole.evaluator.register import metrics_dict

    topk = config["topk"]
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    names = []
    for metric in config["metrics"]:
        cls = metrics_dict.get(str(metric).lower())
        if cls is not None and set(cls.metric_need) & {"rec.topk", "rec.items"}:
            names += [f"{str(metric).lower()}@{k}" for k in topk]
        else:
            names.append(str(metric).lower())
    return names


def check_valid_metric(config) -> None:
    """``valid_metric`` must be computed, else RecBole fails with ``KeyError`` after an epoch."""
    names = computed_metrics(config)
    valid = str(config["valid_metric"]).lower()
    if valid not in names:
        raise ConfigError(f"valid_metric `{config['valid_metric']}` is not among the computed metrics "
                          f"{names} (set by `metrics` and `topk`)")


def check_evaluated_strings(config) -> None:
    """RecBole's KD_DAGFM ``eval``s its ``teacher`` value to find the teacher model class:
    it must be a plain class name."""
    teacher = config.final_config_dict.get("teacher")
    if teacher is not None and not (isinstance(teacher, str) and teacher.isidentifier()):
        raise ConfigError(f"`teacher: {teacher!r}` must be a model class name (RecBole evaluates it)")


class SafeConfig(Config):
    """RecBole's ``Config`` that never ``eval``s, never reads ``sys.argv`` and reads
    config files with :func:`load_yaml`. Pass typed values in ``config_dict``."""

    def _load_config_files(self, file_list):
        merged: dict = {}
        for path in file_list or []:
            merged.update(load_yaml(path))
        return merged

    def _convert_config_dict(self, config_dict):
        # RecBole `eval`s each string here; values reaching us are already typed.
        return dict(config_dict)

    def _load_cmd_line(self):
        return {}

    def _init_device(self):
        import torch

        if "local_rank" in self.final_config_dict and (
                not torch.cuda.is_available() or not self.final_config_dict.get("use_gpu", True)):
            # RecBole 1.2.1 initialises NCCL and a CUDA device for every distributed run;
            # without CUDA the same process group runs on gloo and the CPU.
            self.final_config_dict["gpu_id"] = str(self.final_config_dict["gpu_id"])
            cfg = self.final_config_dict
            torch.distributed.init_process_group(
                backend="gloo", rank=cfg["local_rank"] + cfg["offset"], world_size=cfg["world_size"],
                init_method=f"tcp://{cfg['ip']}:{cfg['port']}")
            cfg["device"] = torch.device("cpu")
            cfg["single_spec"] = False
            if cfg["local_rank"] != 0:
                cfg["state"] = "error"
                cfg["show_progress"] = False
                cfg["verbose"] = False
            return
        super()._init_device()
