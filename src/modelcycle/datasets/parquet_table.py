"""The ``parquet`` dataset plugin: tabular records from Parquet files, read with pyarrow.

``data: {dataset: parquet, path: data.parquet, options: {label_column: diagnosis}}``: one file
(split into train and test by ``options.test_fraction``) or a directory holding
``train.parquet`` and ``test.parquet``. The options and the encoding rules are
:mod:`modelcycle.datasets.tabular`'s (a dictionary-encoded column is text, so categorical).
Lineage: the md5 of every file read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.datasets import Dataset
from modelcycle.core.errors import DatasetIntegrityError
from modelcycle.core.markers import hookimpl
from modelcycle.datasets.tabular import load_table_dataset, locate_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

NAME = "parquet"
SUFFIX = ".parquet"


def read_parquet(path: Path) -> pd.DataFrame:
    """One Parquet file as a frame (pyarrow reads it; pandas holds it).

    Raises:
        DatasetIntegrityError: the file is not a readable Parquet file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetIntegrityError(
            f"{path}: not a readable Parquet file ({exc}); write it with pandas.DataFrame.to_parquet or "
            "pyarrow.parquet.write_table") from None
    return table.to_pandas()


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    return locate_table(NAME, settings, SUFFIX)


@hookimpl
def dataset_load(location: Path, settings: Any) -> Dataset:
    return load_table_dataset(NAME, location, settings, SUFFIX, read_parquet)
