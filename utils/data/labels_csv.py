"""The labels CSV, <split>_labels.csv: the one place that reads and writes it.

Columns `filename,width,height,class,xmin,ymin,xmax,ymax,source`: one row per box, pixel coordinates,
`source` the dataset the image came from (egohands, oxford, voc, coco or a name the user chose).
A CSV written before the `source` column existed still reads; its rows get `default_source`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from utils.common import config
from utils.common.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

CSV_COLUMNS = config.LABELS_CSV_COLUMNS                 # required when reading
SOURCE_COLUMN = config.LABELS_CSV_SOURCE_COLUMN
WRITTEN_COLUMNS = (*CSV_COLUMNS, SOURCE_COLUMN)        # what every importer writes
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")


class LabelsCsvError(UserError):
    """A labels CSV that cannot be read; the message names the file and the fix."""


def read_labels_table(path: str | os.PathLike, default_source: str = config.LEGACY_SOURCE,
                      missing_hint: str = "run `make data` first",
                      error: type[UserError] = LabelsCsvError) -> pd.DataFrame:
    """A labels CSV as a DataFrame with every column of WRITTEN_COLUMNS (text columns as str).

    Only the presence of the columns is checked here; what a consumer needs beyond that (numbers,
    boxes inside the image) it checks itself. Rows without a source (an old CSV, or an empty cell)
    get `default_source`. Raises `error` (a UserError) naming the file.
    """
    import pandas as pd

    path = Path(path)
    text_columns = {"filename": str, "class": str, SOURCE_COLUMN: str}
    try:
        df = pd.read_csv(path, dtype=text_columns, keep_default_na=False)
    except FileNotFoundError as exc:
        raise error(f"{path}: no such file; {missing_hint}") from exc
    except pd.errors.EmptyDataError as exc:
        raise error(f"{path}: empty file, not even a header; expected {','.join(WRITTEN_COLUMNS)}") from exc
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{path}: not a readable CSV ({first}); regenerate it with `make data`") from exc
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise error(f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(WRITTEN_COLUMNS)}")
    if SOURCE_COLUMN not in df.columns:
        df[SOURCE_COLUMN] = default_source
    else:
        df.loc[df[SOURCE_COLUMN].str.strip() == "", SOURCE_COLUMN] = default_source
    return df


def write_labels_csv(path: str | os.PathLike, rows: Iterable[tuple]) -> None:
    """Write rows (filename, width, height, class, xmin, ymin, xmax, ymax, source) with the header.

    Writes `path` directly: callers pass a temporary from utils.common.fileio.atomic_path.
    """
    import pandas as pd

    # Opened here, not by pandas: a folder name that is not UTF-8 (bytes from another system) is still a valid
    # path to open(), while pandas' own path handling fails on it.
    with open(path, "w", encoding="utf-8", newline="") as fh:
        pd.DataFrame(list(rows), columns=list(WRITTEN_COLUMNS)).to_csv(fh, index=False, lineterminator="\n")
