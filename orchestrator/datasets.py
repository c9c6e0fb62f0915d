"""Rows from local Hugging Face datasets: a parquet or arrow file, a folder of them, or a folder
written by ``Dataset.save_to_disk``.

SWE-bench, SWE-Gym, SWE-rebench and R2E-Gym ship as such datasets (FAIL_TO_PASS/PASS_TO_PASS as
JSON strings); :func:`load_rows` turns one split into plain dicts that the task loaders validate.
The ``datasets`` library is imported when a dataset is read, never at import time; nothing here
touches the network (``HF_DATASETS_OFFLINE`` is set for the call).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.exceptions import TaskError

#: file suffixes read as datasets (anything else goes to the JSONL loaders)
DATASET_SUFFIXES = (".parquet", ".arrow")


def is_dataset_path(path: str | os.PathLike[str]) -> bool:
    """A parquet/arrow file, or a folder (a saved dataset or a folder of data files)."""
    p = Path(path)
    return p.suffix in DATASET_SUFFIXES or p.is_dir()


def _import_datasets() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise TaskError(
            "reading parquet/arrow task datasets needs the `datasets` library: "
            "pip install 'agentic-rollout[datasets]'"
        ) from None
    return datasets


def load_rows(
    path: str | os.PathLike[str], *, split: str | None = None, columns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """One split of a local dataset as dicts.

    ``split`` picks a split of a folder with several (``train``, ``test``...); a single file is
    one split under any name. ``columns``: required column names; a dataset without one of them
    is refused with the missing names (before any row is validated).
    """
    p = Path(path)
    if not p.exists():
        raise TaskError(f"dataset {p} does not exist")
    datasets = _import_datasets()
    try:
        if p.is_dir() and (
            (p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()
        ):
            loaded: Any = datasets.load_from_disk(str(p))
        elif p.is_dir():
            loaded = datasets.load_dataset(str(p))
        else:
            builder = "parquet" if p.suffix == ".parquet" else "arrow"
            loaded = datasets.load_dataset(builder, data_files={split or "train": str(p)})
    except (OSError, ValueError) as exc:
        raise TaskError(f"cannot read dataset {p}: {exc}") from None
    ds = _pick_split(loaded, p, split, datasets)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise TaskError(
            f"dataset {p} has no column {', '.join(missing)} (it has: {', '.join(ds.column_names)})"
        )
    return [dict(row) for row in ds]


def _pick_split(loaded: Any, path: Path, split: str | None, datasets: Any) -> Any:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    names = list(loaded.keys())
    if split is None:
        if len(names) == 1:
            return loaded[names[0]]
        raise TaskError(f"dataset {path} has splits {', '.join(names)}: choose one with --split")
    if split not in loaded:
        raise TaskError(f"dataset {path} has no split {split!r} (it has: {', '.join(names)})")
    return loaded[split]
