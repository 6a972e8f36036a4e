"""``mllmrec preferences``: user preference paragraphs from TRAINING behaviour lists.

Example (the bundled Gemma 3 270M, a base model, with the few-shot template)::

    mllmrec preferences data/ml-100k --template preference-fewshot \\
        --item-template "{movie_title} ({release_year}; {class})" --history-tokens 160

``--prompts-only FILE`` writes the prompts (with token counts) and generates nothing.
"""
import json
import os
import sys

from mllmrec_pyg.reasoning.cli_args import (add_backend_args, backend_from_config, dataset_name,
                                            default_preference_template)
from mllmrec_pyg.reasoning.histories import LEAKY_WARNING, WordCounter
from mllmrec_pyg.reasoning.store import default_store_path
from mllmrec_pyg.reasoning.templates import TEMPLATES, get_template

from mllmrec_pyg.errors import about
from mllmrec_pyg.reasoning.cli_args import check_item_template_file, number_arg


def add_preference_args(p) -> None:
    p.add_argument("--template", default=None,
                   help=f"built-in name ({', '.join(sorted(TEMPLATES))}) or a YAML/JSON/TXT file "
                        "(default: preference, a chat template, with --backend openai; preference-fewshot, "
                        "for base models, with local backends)")
    p.add_argument("--item-template", help="str.format template of one item over the .item columns, e.g. "
                                           "'{movie_title} ({release_year}; {class})' (default: labelled fields)")
    p.add_argument("--image-descriptions", help="JSONL of image descriptions to fuse into item texts")
    p.add_argument("--item-texts", help="ready JSONL of item descriptions (overrides --item-template)")
    p.add_argument("--history-tokens", type=number_arg("--history-tokens"), default=256,
                   help="token budget of a behaviour list (default 256)")
    p.add_argument("--item-tokens", type=number_arg("--item-tokens"), default=48,
                   help="per-item truncation in tokens (default 48)")
    p.add_argument("--max-items", type=number_arg("--max-items"), help="at most this many items per list")
    p.add_argument("--max-prompt-tokens", type=number_arg("--max-prompt-tokens"),
                   help="refuse prompts longer than this")
    p.add_argument("--split-column", help="for a single <name>.inter: column marking training rows")
    p.add_argument("--empty-text", default="", help="text of a user without training items (default empty)")


def register(subparsers) -> None:
    p = subparsers.add_parser("preferences", help="generate user preference texts from training histories",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("dataset_dir", help="directory of the RecBole atomic files")
    p.add_argument("--name", help="dataset name (default: the directory's name)")
    add_preference_args(p)
    add_backend_args(p, "transformers", "gemma3-270m")
    p.add_argument("--store", help="generation store (default <dataset_dir>/<name>.preferences.<model>.<hash of "
                                   "model and settings>.store.jsonl)")
    p.add_argument("--output", help="user texts JSONL (default <dataset_dir>/<name>.preferences.jsonl)")
    p.add_argument("--prompts-only", metavar="FILE", help="write the prompts with token counts; generate nothing")
    p.add_argument("--leaky", action="store_true",
                   help="use ALL interactions (valid/test included) to MEASURE leakage; never for results")
    p.add_argument("--limit", type=number_arg("--limit"),
                   help="generate at most this many users, the first ones in the dataset's order (a partial "
                        "run: --output then holds every user whose text is stored so far)")
    p.add_argument("--regenerate", action="store_true",
                   help="generate every user again even when stored (appended; the newest record wins)")
    p.add_argument("--manifest", metavar="FILE", help="write the provenance (model, template hash, settings, "
                                                      "split, date, throughput) of the texts")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from mllmrec_pyg.reasoning.preferences import (build_prompts, generate_preferences, item_descriptions,
                                                   write_manifest, write_prompts)

    if args.template is not None:
        with about("--template"):
            get_template(args.template)  # a bad template file is named before anything is read

    name = dataset_name(args.dataset_dir, args.name)
    if args.item_template is not None and not args.item_texts:
        item_file = os.path.join(args.dataset_dir, f"{name}.item")
        check_item_template_file(item_file, args.item_template, "--item-template")
    if args.leaky:
        print(f"WARNING: {LEAKY_WARNING}", file=sys.stderr)
    template = get_template(args.template or default_preference_template(args.backend))
    spec = backend_from_config(vars(args))
    counter = spec.token_counter() or WordCounter()
    descriptions = item_descriptions(args.dataset_dir, name, args.item_template, args.image_descriptions,
                                     args.item_texts)
    prompts = build_prompts(args.dataset_dir, template, descriptions, counter, name, args.history_tokens,
                            args.item_tokens, args.max_items, args.max_prompt_tokens, args.leaky, args.split_column)
    if args.prompts_only:
        summary = write_prompts(args.prompts_only, prompts, template, counter.name, args.leaky)
        print(json.dumps({"prompts": args.prompts_only, **summary}))
        return 0
    suffix = ".leaky" if args.leaky else ""
    store = args.store or default_store_path(args.dataset_dir, name, f"preferences{suffix}", spec.model_id,
                                             spec.settings.as_dict())
    output = args.output or os.path.join(args.dataset_dir, f"{name}.preferences{suffix}.jsonl")
    stats = generate_preferences(prompts, spec, template, store, output, args.empty_text,
                                 progress=not args.no_progress, limit=args.limit, regenerate=args.regenerate)
    if args.manifest and not stats["partial"]:
        write_manifest(args.manifest, prompts, spec, template, store, output, args.dataset_dir, extra={
            "item_template": args.item_template, "history_tokens": args.history_tokens,
            "item_tokens": args.item_tokens, "max_items": args.max_items, "empty_text": args.empty_text,
            "budget_rule": "most recent training items first; each description cut to item_tokens; items added "
                           "while the list fits history_tokens; kept items listed oldest first"})
        stats["manifest"] = args.manifest
    print(json.dumps({"store": store, **stats}))
    return 0
