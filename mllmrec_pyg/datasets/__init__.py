"""Dataset preparation: Amazon reviews, the MMRec layout, item images, splits and
RecBole atomic files (docs/datasets.md).

Sub-modules import their heavy dependencies lazily; ``movielens`` holds the embedded
MovieLens-100k default.
"""
from mllmrec_pyg.datasets.amazon import k_core, prepare_amazon, read_meta, read_reviews
from mllmrec_pyg.datasets.atomic import OutputExistsError
from mllmrec_pyg.datasets.images import download_dataset_images, download_images
from mllmrec_pyg.datasets.mmrec import export_mmrec, import_mmrec
from mllmrec_pyg.datasets.split import mmrec_split, ratio_split

__all__ = [
    "prepare_amazon", "read_reviews", "read_meta", "k_core", "mmrec_split", "ratio_split",
    "import_mmrec", "export_mmrec", "download_images", "download_dataset_images", "OutputExistsError",
]
