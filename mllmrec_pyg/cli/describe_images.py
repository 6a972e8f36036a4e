"""``mllmrec describe-images``: image → text with an MLLM for the items that have an image,
then the fused item multimodal descriptions.

Example (an OpenAI-compatible server such as vLLM)::

    mllmrec describe-images data/baby --backend openai --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2-VL-7B-Instruct --category-column categories
"""
import json
import os

from mllmrec_pyg.reasoning.cli_args import add_backend_args, backend_from_config, dataset_name
from mllmrec_pyg.reasoning.templates import get_template


def add_describe_args(p) -> None:
    p.add_argument("--template", default="image", help="built-in name or YAML/JSON/TXT file (default: the "
                                                        "reference image prompt)")
    p.add_argument("--image-column", help="column naming each item's image (default: image, image_path, "
                                          "imUrl or image_url, the first present)")
    p.add_argument("--image-dir", help="base directory of relative image paths (default: the dataset directory)")
    p.add_argument("--allow-urls", action="store_true", help="download http(s) images (off by default)")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="read local images anywhere (default: only inside the dataset directory and --image-dir, "
                        "after resolving symlinks and '..')")
    p.add_argument("--max-image-mb", type=float, default=10.0, help="largest accepted image in MiB (default 10)")
    p.add_argument("--url-timeout", type=float, default=30.0,
                   help="seconds for the whole download of one image URL (a deadline; default 30)")
    p.add_argument("--category", default="the product", help="{category} of the prompt (default 'the product')")
    p.add_argument("--category-column", help="column whose last category is the prompt's {category}")
    p.add_argument("--strict", action="store_true", help="fail on a missing or unreadable image instead of "
                                                          "skipping the item")
    p.add_argument("--item-template", help="str.format template fusing the .item columns and "
                                           "{image_description} (default: labelled fields)")


def register(subparsers) -> None:
    p = subparsers.add_parser("describe-images", help="describe item images with an MLLM",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("dataset_dir", help="directory of the RecBole atomic files")
    p.add_argument("--name", help="dataset name (default: the directory's name)")
    add_describe_args(p)
    add_backend_args(p, "vlm", None)
    p.add_argument("--store", help="generation store (default <dataset_dir>/<name>.images.<model>.<hash of model "
                                   "and settings>.store.jsonl)")
    p.add_argument("--output", help="image descriptions JSONL (default <dataset_dir>/<name>.images.jsonl)")
    p.add_argument("--items-output", help="fused item descriptions JSONL (default <dataset_dir>/<name>.items.jsonl)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.max_image_mb <= 0 or args.url_timeout <= 0:
        raise ValueError("--max-image-mb and --url-timeout must be > 0")
    from mllmrec_pyg.reasoning.describe import describe_images, fused_item_texts
    from mllmrec_pyg.reasoning.store import default_store_path
    from mllmrec_pyg.text.io import read_texts

    name = dataset_name(args.dataset_dir, args.name)
    spec = backend_from_config(vars(args))
    store = args.store or default_store_path(args.dataset_dir, name, "images", spec.model_id, spec.settings.as_dict())
    output = args.output or os.path.join(args.dataset_dir, f"{name}.images.jsonl")
    items_output = args.items_output or os.path.join(args.dataset_dir, f"{name}.items.jsonl")
    stats = describe_images(args.dataset_dir, spec, get_template(args.template), store, output,
                            progress=not args.no_progress, name=name, image_column=args.image_column,
                            image_dir=args.image_dir, allow_urls=args.allow_urls, category=args.category,
                            category_column=args.category_column, strict=args.strict,
                            allow_outside=args.allow_outside_paths, max_bytes=int(args.max_image_mb * 2 ** 20),
                            url_timeout=args.url_timeout)
    fused_item_texts(args.dataset_dir, items_output, name, args.item_template, read_texts(output, "item_id"))
    print(json.dumps({"store": store, "items": items_output, **stats}))
    return 0
