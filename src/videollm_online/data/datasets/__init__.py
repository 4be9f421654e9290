"""Loaders of real datasets, each turning its annotation files into stream conversations with frame ranges.

`DATASETS` maps a dataset name to its loader, a function `ConvertOptions -> Converted` (rows and skip counts; see
`common`). To add one, write a module here and add its entry below.
"""

from __future__ import annotations

from ...utils.errors import UserError
from .coin import BENCHMARKS as COIN_BENCHMARKS
from .coin import coin_loader
from .common import Converted, ConvertOptions, Loader
from .ego4d_goalstep import load_goalstep_livechat
from .ego4d_lta import load_lta
from .ego4d_narration import load_narration_stream, load_refined_narration_stream
from .robustness import load_robustness

DATASETS: dict[str, Loader] = {
    "ego4d-narration": load_narration_stream,
    "ego4d-refined-narration": load_refined_narration_stream,
    "ego4d-goalstep-livechat": load_goalstep_livechat,
    "robustness": load_robustness,
    **{f"coin-{benchmark}": coin_loader(benchmark) for benchmark in COIN_BENCHMARKS},
    "ego4d-lta": load_lta,
}


def get_loader(name: str) -> Loader:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


__all__ = ["DATASETS", "ConvertOptions", "Converted", "Loader", "get_loader"]
