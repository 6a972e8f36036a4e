"""``mllmrec download-images``: fetch a prepared dataset's item images (resumable)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "download-images", help="download the item images named in a dataset's .item file",
        description="Downloads the `image_url` of every item of <dataset_dir>/<name>.item into "
                    "<image-dir>/<item>.jpg (concurrent, resumable, retried within a deadline, http(s) only, "
                    "size-, type- and image-checked; "
                    "failures are logged to <image-dir>/download_failures.tsv and skipped) and records "
                    "the files in the .item file's `image` column.")
    p.add_argument("dataset_dir", help="a prepared dataset directory (holds <name>.item)")
    p.add_argument("--name", default=None, help="dataset name (default: the directory's name)")
    p.add_argument("--image-dir", default=None, help="target directory (default <dataset_dir>/images)")
    p.add_argument("--url-column", default="image_url", help=".item column with the URLs (default image_url)")
    p.add_argument("--workers", type=int, default=8, help="concurrent downloads (default 8)")
    p.add_argument("--retries", type=int, default=2, help="extra attempts on network errors/5xx (default 2)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds for the whole download of one image, retries included (a deadline; default 10)")
    p.add_argument("--max-mb", type=float, default=10.0, help="largest accepted image in MiB (default 10)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import os

    from mllmrec_pyg.datasets.images import FAILURES_FILE, download_dataset_images

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not os.path.isdir(args.dataset_dir):
        raise FileNotFoundError(f"{args.dataset_dir}: no such dataset directory")
    if args.workers < 1 or args.retries < 0 or args.timeout <= 0 or args.max_mb <= 0:
        raise ValueError("--workers >= 1, --retries >= 0, --timeout > 0 and --max-mb > 0 are required")
    report = download_dataset_images(args.dataset_dir, name=args.name, image_dir=args.image_dir,
                                     url_column=args.url_column, workers=args.workers, retries=args.retries,
                                     timeout=args.timeout, max_bytes=int(args.max_mb * 2 ** 20),
                                     show_progress=args.progress)
    image_dir = args.image_dir or os.path.join(args.dataset_dir, "images")
    print(f"images: {report.summary()} -> {image_dir}")
    if report.failed:
        print(f"failures listed in {os.path.join(image_dir, FAILURES_FILE)}; run again to retry them")
    return 0
