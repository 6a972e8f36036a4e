"""``mllmrec pipeline --config FILE``: every text stage of a dataset from one YAML.

Stages, in order (each skips work already done: generations are read back from
their stores, encodings from the encoder's chunk cache):

1. ``describe_images`` (optional): image → text, then the fused item descriptions;
2. ``preferences``: user preference paragraphs from the training behaviour lists;
3. ``encode``: sentence embeddings of item and user texts → RecBole feature files.

Example config (every key but ``dataset_dir`` optional; see docs/reasoning.md)::

    dataset_dir: data/ml-100k
    preferences:
      backend: transformers          # or openai (with base_url) / vlm
      model: gemma3-270m
      template: preference-fewshot
      item_template: "{movie_title} ({release_year}; {class})"
      history_tokens: 160
      item_tokens: 32
      batch_size: 16
      max_new_tokens: 72
      repetition_penalty: 1.15
      manifest: preferences.manifest.json   # provenance and throughput
    encode:
      user_texts: preferences        # or history (no LLM) / none
"""
import json
import os

from mllmrec_pyg.reasoning.cli_args import backend_from_config, dataset_name, default_preference_template

BACKEND_KEYS = {"backend", "model", "base_url", "api_key", "concurrency", "retries", "timeout", "batch_size",
                "device", "dtype", "threads", "max_new_tokens", "temperature", "top_p", "seed",
                "repetition_penalty"}
STAGE_KEYS = {
    "describe_images": BACKEND_KEYS | {"enabled", "template", "image_column", "image_dir", "allow_urls", "category",
                                       "category_column", "strict", "item_template", "store", "output",
                                       "items_output"},
    "preferences": BACKEND_KEYS | {"enabled", "template", "item_template", "history_tokens", "item_tokens",
                                   "max_items", "max_prompt_tokens", "split_column", "empty_text", "store",
                                   "output", "leaky", "manifest"},
    "encode": {"enabled", "model", "item_texts", "user_texts", "item_suffix", "user_suffix", "batch_size"},
}
TOP_KEYS = {"dataset_dir", "name"} | set(STAGE_KEYS)
# Keys that are switches; every other key but the numbers of NUMBERS (cli_args) is a string.
FLAG_KEYS = {"enabled", "allow_urls", "strict", "leaky"}


def _check_value(path: str, where: str, key: str, value):
    """A config value of the right type (numbers through cli_args.NUMBERS); a wrong one is
    an error naming the file and the key, e.g. ``pipe.yaml: preferences.history_tokens``."""
    from mllmrec_pyg.errors import InputError
    from mllmrec_pyg.reasoning.cli_args import NUMBERS, check_number

    what = f"{path}: {where}{key}"
    if value is None:
        return None
    if key in NUMBERS:
        return check_number(key, value, what)
    if key in FLAG_KEYS:
        if not isinstance(value, bool):
            raise InputError(None, f"{what}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise InputError(None, f"{what}: expected a string, got {value!r}")
    return value


def load_config(path: str) -> dict:
    """Reads and checks a pipeline YAML; unknown keys are a ``ValueError`` naming them."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"pipeline config {path} does not exist")
    from mllmrec_pyg.errors import reading

    with reading(path):
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a pipeline config is a mapping")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    if "dataset_dir" not in cfg:
        raise ValueError(f"{path}: needs 'dataset_dir'")
    for key in ("dataset_dir", "name"):
        _check_value(path, "", key, cfg.get(key))
    base = os.path.dirname(os.path.abspath(path))
    if not os.path.isabs(cfg["dataset_dir"]):
        cfg["dataset_dir"] = os.path.normpath(os.path.join(base, cfg["dataset_dir"]))  # relative to the config file
    for stage, known in STAGE_KEYS.items():
        section = cfg.get(stage)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ValueError(f"{path}: '{stage}' must be a mapping")
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys in '{stage}': {sorted(unknown)} (known: {sorted(known)})")
        cfg[stage] = {k: _check_value(path, f"{stage}.", k, v) for k, v in section.items()}
    from mllmrec_pyg.reasoning.cli_args import check_item_template_file

    name = cfg.get("name") or os.path.basename(os.path.normpath(cfg["dataset_dir"]))
    for stage in ("describe_images", "preferences"):
        if isinstance(cfg.get(stage), dict) and cfg[stage].get("item_template") is not None:
            check_item_template_file(os.path.join(cfg["dataset_dir"], f"{name}.item"), cfg[stage]["item_template"],
                                     f"{path}: {stage}.item_template")
    return cfg


def _path(dataset_dir: str, value, default: str) -> str:
    """A stage file: ``value`` (relative to the dataset directory) or ``default`` there."""
    value = value or default
    return value if os.path.isabs(value) else os.path.join(dataset_dir, value)


def register(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="run describe-images → preferences → encode from one YAML",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="pipeline YAML")
    p.add_argument("--stages", default="describe_images,preferences,encode",
                   help="comma-separated stages to run (default: all that the config enables)")
    p.add_argument("--regenerate", action="store_true",
                   help="generate every text again even when stored (new records are appended; the newest wins)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run_pipeline(cfg: dict, stages=("describe_images", "preferences", "encode"), progress: bool = True,
                 regenerate: bool = False) -> dict:
    """Runs the enabled stages of a checked config (:func:`load_config`); returns a report per stage.
    ``regenerate`` generates every text again even when stored (appended to the stores)."""
    from mllmrec_pyg.reasoning.describe import describe_images, fused_item_texts
    from mllmrec_pyg.reasoning.histories import WordCounter
    from mllmrec_pyg.reasoning.preferences import build_prompts, generate_preferences, item_descriptions
    from mllmrec_pyg.reasoning.store import default_store_path
    from mllmrec_pyg.reasoning.templates import get_template
    from mllmrec_pyg.text.io import read_texts

    unknown = set(stages) - set(STAGE_KEYS)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)} (known: {list(STAGE_KEYS)})")
    d = cfg["dataset_dir"]
    name = dataset_name(d, cfg.get("name"))
    report = {}
    items_file = None

    img = cfg.get("describe_images")
    if img and img.get("enabled", True):
        items_file = _path(d, img.get("items_output"), f"{name}.items.jsonl")
        if "describe_images" in stages:
            output = _path(d, img.get("output"), f"{name}.images.jsonl")
            img_spec = backend_from_config(img)
            store = (_path(d, img["store"], "") if img.get("store") else
                     default_store_path(d, name, "images", img_spec.model_id, img_spec.settings.as_dict()))
            stats = describe_images(d, img_spec, get_template(img.get("template", "image")), store,
                                    output, progress=progress, name=name, image_column=img.get("image_column"),
                                    image_dir=img.get("image_dir"), allow_urls=bool(img.get("allow_urls")),
                                    category=img.get("category", "the product"),
                                    category_column=img.get("category_column"), strict=bool(img.get("strict")),
                                    regenerate=regenerate)
            fused_item_texts(d, items_file, name, img.get("item_template"), read_texts(output, "item_id"))
            report["describe_images"] = {"store": store, "items": items_file, **stats}

    pref = cfg.get("preferences") or {}
    users_file = None
    if pref.get("enabled", True):
        suffix = ".leaky" if pref.get("leaky") else ""
        users_file = _path(d, pref.get("output"), f"{name}.preferences{suffix}.jsonl")
        if "preferences" in stages:
            spec = backend_from_config({"backend": "transformers", "model": "gemma3-270m", **pref})
            template = get_template(pref.get("template")
                                    or default_preference_template(pref.get("backend", "transformers")))
            counter = spec.token_counter() or WordCounter()
            descriptions = item_descriptions(d, name, pref.get("item_template"),
                                             item_texts_file=items_file if pref.get("item_template") is None else None)
            prompts = build_prompts(d, template, descriptions, counter, name, pref.get("history_tokens", 256),
                                    pref.get("item_tokens", 48), pref.get("max_items"), pref.get("max_prompt_tokens"),
                                    bool(pref.get("leaky")), pref.get("split_column"))
            store = (_path(d, pref["store"], "") if pref.get("store") else
                     default_store_path(d, name, f"preferences{suffix}", spec.model_id, spec.settings.as_dict()))
            stats = generate_preferences(prompts, spec, template, store, users_file, pref.get("empty_text", ""),
                                         progress=progress, regenerate=regenerate)
            if pref.get("manifest"):
                from mllmrec_pyg.reasoning.preferences import write_manifest

                stats["manifest"] = _path(d, pref["manifest"], "")
                write_manifest(stats["manifest"], prompts, spec, template, store, users_file, d, extra={
                    k: pref.get(k) for k in ("item_template", "history_tokens", "item_tokens", "max_items")})
            report["preferences"] = {"store": store, **stats}

    enc = cfg.get("encode") or {}
    if enc.get("enabled", True) and "encode" in stages:
        from mllmrec_pyg.text.encoder import encode_dataset

        user_texts = enc.get("user_texts", "preferences")
        if user_texts == "preferences":
            if users_file is None:
                raise ValueError("encode.user_texts is 'preferences' but the preferences stage is disabled")
            user_texts = users_file
        elif user_texts == "none":
            user_texts = None
        item_texts = enc.get("item_texts", "fused")
        item_texts = items_file if item_texts == "fused" else (None if item_texts in (None, "item") else item_texts)
        written = encode_dataset(d, name, item_texts=item_texts, user_texts=user_texts, model=enc.get("model"),
                                 item_suffix=enc.get("item_suffix", "itememb"),
                                 user_suffix=enc.get("user_suffix", "useremb"), batch_size=enc.get("batch_size", 64),
                                 show_progress=progress)
        report["encode"] = written
    return report


def run(args) -> int:
    cfg = load_config(args.config)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    report = run_pipeline(cfg, stages, progress=not args.no_progress, regenerate=args.regenerate)
    print(json.dumps(report, indent=1))
    return 0
