"""Campaign products: the index the batch runner writes, and all results opened as one tree.

A batch run writes ``campaign_index.csv`` into its output folder: one row per input file, with
the columns of :data:`INDEX_COLUMNS` (``status`` is ``done``, ``skipped`` or ``failed``; paths
are absolute or relative to the folder). :func:`read_campaign_index` reads it as a pandas
DataFrame; :func:`open_campaign` opens every results file it lists, lazily, as one
``xr.DataTree``::

    /                          the index as a Dataset over dim ``file`` (every row, failed too)
    /<file>                    one node per done/skipped input file (name from its stem);
                               its attrs: the results file's provenance plus the index row
    /<file>/<window>           that file's per-window results (dask arrays, nothing read yet)
    /<file>/fip/<set>          its FIP-bias maps, when the row names a ``fip_output`` file
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .netcdf import open_results

__all__ = ["INDEX_NAME", "INDEX_COLUMNS", "read_campaign_index", "open_campaign"]

log = logging.getLogger(__name__)

#: File name of the campaign index in the output folder.
INDEX_NAME = "campaign_index.csv"
#: Columns of the campaign index, in order.
INDEX_COLUMNS = (
    "input",
    "status",
    "reason",
    "spectra",
    "converged_fraction",
    "at_bound_fraction",
    "noise_floor_ratio",
    "noise_photon_ratio",
    "seconds",
    "output",
    "fip_output",
)
_TEXT_COLUMNS = ("input", "status", "reason", "output", "fip_output")
_STATUSES = ("done", "skipped", "failed")
_ON_MISSING = ("raise", "mark")


def _index_path(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such campaign folder")
    path = folder / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no campaign index in this folder (a batch run writes it next to its outputs)"
        )
    return path


def read_campaign_index(folder) -> pd.DataFrame:
    """Read the campaign index (``campaign_index.csv``) of a batch output folder.

    Parameters
    ----------
    folder : str or path-like
        The output folder of a batch run.

    Returns
    -------
    pandas.DataFrame
        One row per input file, the columns of :data:`INDEX_COLUMNS`: text columns
        (``input``, ``status``, ``reason``, ``output``, ``fip_output``) with ``""`` where
        empty, the others float (NaN where empty).

    Raises
    ------
    FileNotFoundError
        The folder or its index does not exist (the message names the path).
    ValueError
        The index lacks a column, holds a non-numeric value in a numeric column or an
        unknown status (the message names the file and the row).
    """
    path = _index_path(folder)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable campaign index ({exc})") from exc
    absent = [c for c in INDEX_COLUMNS if c not in table.columns]
    if absent:
        raise ValueError(f"{path}: the campaign index lacks the columns {absent}")
    table = table[list(INDEX_COLUMNS)].copy()
    for column in INDEX_COLUMNS:
        if column in _TEXT_COLUMNS:
            table[column] = table[column].str.strip()
            continue
        text = table[column].str.strip().replace("", "nan")
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["nan", "na", "none"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: row {row + 1} ({table['input'].iloc[row]}): '{column}' is not a "
                f"number: {table[column].iloc[row]!r}"
            )
        table[column] = values.astype(float)
    unknown = ~table["status"].isin(_STATUSES)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise ValueError(
            f"{path}: row {row + 1} ({table['input'].iloc[row]}): status must be one of "
            f"{', '.join(_STATUSES)}, got {table['status'].iloc[row]!r}"
        )
    return table


def _node_names(inputs) -> list[str]:
    """Valid, unique DataTree node names from the input files' stems."""
    names, seen = [], set()
    for value in inputs:
        stem = Path(str(value)).name.split(".")[0] or "file"
        name = re.sub(r"[^0-9A-Za-z_\-]+", "_", stem)
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        names.append(unique)
    return names


def _located(folder: Path, value: str) -> Path | None:
    """The file named in the index: relative to the folder, or absolute; an absolute path
    that no longer exists is looked for by name in the folder (a moved campaign)."""
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        return folder / path
    if not path.exists() and (folder / path.name).exists():
        return folder / path.name
    return path


def _index_dataset(table: pd.DataFrame, names: list[str], folder: Path) -> xr.Dataset:
    data = {}
    for column in INDEX_COLUMNS:
        values = table[column].to_numpy()
        if column in _TEXT_COLUMNS:
            values = values.astype(str)
        data[column] = ("file", values)
    ds = xr.Dataset(data, coords={"file": names})
    for column in ("converged_fraction", "at_bound_fraction"):
        ds[column].attrs["units"] = "1"
    ds["seconds"].attrs["units"] = "s"
    ds.attrs = {"campaign_folder": str(folder), "campaign_index": str(folder / INDEX_NAME)}
    return ds


def _row_attrs(row: dict) -> dict:
    out = {}
    for column in INDEX_COLUMNS:
        value = row[column]
        out[column] = str(value) if column in _TEXT_COLUMNS else float(value)
    return out


def _add_results(nodes: dict, name: str, tree: xr.DataTree, row_attrs: dict) -> None:
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        if node is tree:
            ds.attrs = {**ds.attrs, **row_attrs}
        nodes[f"/{name}" + ("" if node is tree else node.path)] = ds


def open_campaign(folder, *, chunks=None, on_missing: str = "raise") -> xr.DataTree:
    """Open every result of a batch run lazily, as one DataTree labelled by input file.

    Parameters
    ----------
    folder : str or path-like
        The output folder of a batch run, holding ``campaign_index.csv``.
    chunks : optional
        dask chunks for :func:`~saffron_xr.io.netcdf.open_results` (default: each file's own).
    on_missing : {"raise", "mark"}, default "raise"
        What to do when a ``done`` or ``skipped`` row names a results file that does not
        exist: raise :class:`FileNotFoundError`, or log a warning, give the row the status
        ``missing`` (reason: the path) in the root index and leave its node out.

    Returns
    -------
    xarray.DataTree
        The root holds the index as a Dataset over dim ``file`` (node names; every row,
        failed ones with their ``reason``). One child per done/skipped file, named after the
        input file's stem (characters other than letters, digits, ``_`` and ``-`` replaced
        by ``_``; a repeated stem gets ``_2``, ``_3``...): its attrs are the results file's
        root attributes plus the index row (the columns of :data:`INDEX_COLUMNS`), its
        children the per-window results, and, if the row names a FIP file, a child ``fip``
        with one node per line set. Variables are dask arrays: nothing is read or computed.
        Closing the returned tree closes every file.

    Raises
    ------
    FileNotFoundError
        The folder or its index does not exist, or (``on_missing="raise"``) a listed
        results file is missing; the message names the path.
    ValueError
        A malformed index (see :func:`read_campaign_index`) or an unreadable results file.

    Examples
    --------
    >>> tree = open_campaign("saffron_results")  # doctest: +SKIP
    >>> tree["file"].values, tree["status"].values  # doctest: +SKIP
    """
    if on_missing not in _ON_MISSING:
        raise ValueError(f"on_missing must be one of {_ON_MISSING}, got {on_missing!r}")
    folder = Path(folder)
    table = read_campaign_index(folder)
    names = _node_names(table["input"])
    nodes: dict[str, xr.Dataset] = {}
    opened: list[xr.DataTree] = []
    try:
        records = table.to_dict("records")
        for i, (name, row) in enumerate(zip(names, records, strict=True)):
            if row["status"] == "failed":
                continue
            output = _located(folder, row["output"])
            if output is None or not output.exists():
                where = output if output is not None else "(no output path in the index)"
                message = f"{folder / INDEX_NAME}: {row['input']} is {row['status']} but its "
                message += f"results file is missing: {where}"
                if on_missing == "raise":
                    raise FileNotFoundError(message)
                log.warning("%s", message)
                table.loc[table.index[i], ["status", "reason"]] = [
                    "missing",
                    f"results file not found: {where}",
                ]
                continue
            tree = open_results(output, chunks=chunks)
            opened.append(tree)
            _add_results(nodes, name, tree, _row_attrs(row))
            fip = _located(folder, row["fip_output"])
            if fip is not None and fip.exists():
                fip_tree = open_results(fip, chunks=chunks)
                opened.append(fip_tree)
                _add_results(nodes, f"{name}/fip", fip_tree, {})
            elif fip is not None:
                log.warning("%s: FIP file listed for %s not found: %s", folder, name, fip)
    except BaseException:
        for tree in opened:
            tree.close()
        raise
    nodes["/"] = _index_dataset(table, names, folder)
    out = xr.DataTree.from_dict(nodes)

    def close():
        for tree in opened:
            tree.close()

    out.set_close(close)
    return out
