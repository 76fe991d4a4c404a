"""The ``csv`` dataset plugin: tabular records from CSV files, read with pandas.

``data: {dataset: csv, path: data.csv, options: {label_column: diagnosis}}``: one file (split
into train and test by ``options.test_fraction``) or a directory holding ``train.csv`` and
``test.csv``. The options and the encoding rules are :mod:`modelcycle.datasets.tabular`'s.
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

NAME = "csv"
SUFFIX = ".csv"


def read_csv(path: Path) -> pd.DataFrame:
    """One CSV file (a header row, then one record per line) as a frame.

    Raises:
        DatasetIntegrityError: the file is empty, not UTF-8 text or not well-formed CSV.
    """
    import pandas as pd

    try:
        return pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetIntegrityError(
            f"{path}: not a readable CSV table ({str(exc).strip()}); give UTF-8 text with a header row and "
            "the same number of comma-separated values on every line") from None


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    return locate_table(NAME, settings, SUFFIX)


@hookimpl
def dataset_load(location: Path, settings: Any) -> Dataset:
    return load_table_dataset(NAME, location, settings, SUFFIX, read_csv)
