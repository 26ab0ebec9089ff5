"""Batch configuration: one YAML file, validated with messages that name the bad key.

The commented template shipped with the package (``pipeline/template.yaml``, written by
``saffron-xr init``) *is* the list of defaults: :func:`default_config` parses it, so the
documentation and the defaults cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import logging
from importlib.resources import files
from pathlib import Path

import yaml

__all__ = ["ConfigError", "default_config", "load_config", "validate_config", "template_text"]

SCHEDULER_KINDS = (
    "auto",
    "threads",
    "processes",
    "synchronous",
    "local",
    "address",
    "slurm",
    "pbs",
)

log = logging.getLogger(__name__)

# keys whose value may take several types (others must match the template's type)
_MULTI_TYPES = {
    ("files", "source"): (str, list),
    ("files", "start"): (str, type(None)),
    ("files", "end"): (str, type(None)),
    ("files", "spiobsid"): (int, list, type(None)),
    ("windows", "include"): (list, str, type(None)),
    ("catalog", "path"): (str, type(None)),
    ("derive", "doppler_reference"): (str, float, int),
    ("derive", "log_t"): (float, int, dict, type(None)),
    ("derive", "instrumental_fwhm"): (float, int, type(None)),
    ("derive", "nonthermal"): (bool, type(None)),
    ("derive", "gradient"): (dict, type(None)),
    ("derive", "mask"): (str, type(None)),
    ("scheduler", "files_in_flight"): (int, type(None)),
    ("output", "compression"): (str, type(None)),
    ("catalog", "weak_pixel_snr"): (int, float, type(None)),
    ("scheduler", "n_workers"): (int, type(None)),
    ("scheduler", "address"): (str, type(None)),
    ("scheduler", "jobqueue", "queue"): (str, type(None)),
    ("scheduler", "jobqueue", "account"): (str, type(None)),
    ("files", "kind"): (str, type(None)),
    ("files", "study"): (str, type(None)),
    ("files", "soop"): (str, type(None)),
}
# keys renamed to their function's keyword (old name -> new name; None: no longer a setting)
_RENAMED = {
    ("prep", "despike", "threshold"): "n_sigma",
    ("prep", "binning", "levels"): "sizes",
    ("prep", "binning", "min_valid_fraction"): "min_valid",
    ("derive", "radiance"): None,
    ("derive", "widths"): None,
}
# mappings whose keys are free (window names)
_FREE_MAPPINGS = {("models",)}


class ConfigError(ValueError):
    """A configuration file or mapping is invalid; the message names the key."""


def template_text() -> str:
    """The commented configuration template (YAML text) with every key and its default."""
    return (files("saffron_xr.pipeline") / "template.yaml").read_text()


def default_config() -> dict:
    """The default configuration, parsed from the shipped template."""
    return yaml.safe_load(template_text())


def _type_name(types):
    names = {type(None): "null", str: "text", int: "integer", float: "number", bool: "true/false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check(value, default, path, where):
    key = ".".join(path)
    if path in _FREE_MAPPINGS:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return copy.deepcopy(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping of settings, got {value!r}")
        unknown = sorted(set(value) - set(default))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key '{'.'.join(path + (unknown[0],))}'"
                f"; '{key or 'the top level'}' takes: {', '.join(sorted(default))}"
            )
        out = {}
        for name, sub_default in default.items():
            if name in value:
                out[name] = _check(value[name], sub_default, path + (name,), where)
            else:
                out[name] = copy.deepcopy(sub_default)
        return out
    types = _MULTI_TYPES.get(path)
    if types is None:
        if default is None:
            return value
        types = (type(default),)
        if isinstance(default, float):
            types = (float, int)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise ConfigError(f"{where}: '{key}' must be {_type_name(types)}, got {value!r}")
    return copy.deepcopy(value)


def _renamed(config: dict, where: str) -> dict:
    """``config`` with the keys of older templates under their current names (logged)."""
    config = copy.deepcopy(config)
    for (*parents, old), new in _RENAMED.items():
        section = config
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if not isinstance(section, dict) or old not in section:
            continue
        dotted = ".".join((*parents, old))
        value = section.pop(old)
        if new is None:
            log.info("%s: '%s' is no longer a setting (derive_all writes it); ignored", where,
                     dotted)  # fmt: skip
        elif new in section:
            raise ConfigError(f"{where}: '{dotted}' is the old name of '{new}'; give only one")
        else:
            log.info("%s: '%s' is now called '%s'", where, dotted, new)
            section[new] = value
    return config


def _semantic_checks(cfg, where):
    sched = cfg["scheduler"]["kind"]
    if sched not in SCHEDULER_KINDS:
        raise ConfigError(
            f"{where}: 'scheduler.kind' must be one of {', '.join(SCHEDULER_KINDS)}, got {sched!r}"
        )
    if sched == "address" and not cfg["scheduler"]["address"]:
        raise ConfigError(
            f"{where}: 'scheduler.address' is required when scheduler.kind is address"
        )
    if cfg["output"]["format"] not in ("netcdf", "zarr"):
        raise ConfigError(
            f"{where}: 'output.format' must be netcdf or zarr, got {cfg['output']['format']!r}"
        )
    if cfg["output"]["compression"] not in ("zstd", "zlib", "none", None):
        raise ConfigError(
            f"{where}: 'output.compression' must be zstd, zlib or none, "
            f"got {cfg['output']['compression']!r}"
        )
    kind = cfg["files"]["kind"]
    if kind is not None and kind not in ("ras", "sit", "exp"):
        raise ConfigError(f"{where}: 'files.kind' must be ras, sit, exp or null, got {kind!r}")
    levels = cfg["prep"]["binning"]["sizes"]
    if not levels or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in levels):
        raise ConfigError(
            f"{where}: 'prep.binning.sizes' must be a list of positive integers, got {levels!r}"
        )
    if sorted(levels) != levels or len(set(levels)) != len(levels):
        raise ConfigError(f"{where}: 'prep.binning.sizes' must increase strictly, got {levels!r}")
    if cfg["derive"]["mask"] not in ("good", "usable", None):
        raise ConfigError(f"{where}: 'derive.mask' must be good, usable or null")
    n = cfg["scheduler"]["files_in_flight"]
    if n is not None and (isinstance(n, bool) or n < 1):
        raise ConfigError(f"{where}: 'scheduler.files_in_flight' must be a positive integer")
    weak = cfg["catalog"]["weak_pixel_snr"]
    if weak is not None and (isinstance(weak, bool) or not weak >= 0):
        raise ConfigError(f"{where}: 'catalog.weak_pixel_snr' must be >= 0 or null, got {weak!r}")
    if cfg["catalog"]["background_degree"] not in ("auto", 0, 1, 2):
        raise ConfigError(f"{where}: 'catalog.background_degree' must be auto, 0, 1 or 2")
    if cfg["prep"]["despike"]["replace"] not in ("nan", "median"):
        raise ConfigError(f"{where}: 'prep.despike.replace' must be nan or median")
    ref = cfg["derive"]["doppler_reference"]
    if isinstance(ref, str) and ref not in ("rest", "median", "column"):
        raise ConfigError(
            f"{where}: 'derive.doppler_reference' must be rest, median, column or a wavelength "
            f"in Angstrom, got {ref!r}"
        )
    for i, group in enumerate(cfg["fuse"]):
        if not (
            isinstance(group, list) and len(group) >= 2 and all(isinstance(g, str) for g in group)
        ):
            raise ConfigError(f"{where}: 'fuse[{i}]' must be a list of two or more window names")
    for i, lock in enumerate(cfg["locks"]):
        where_lock = f"{where}: 'locks[{i}]'"
        if not isinstance(lock, dict) or not {"line", "to"} <= set(lock):
            raise ConfigError(
                f"{where_lock} must be a mapping with 'line', 'to' and optionally 'offset', "
                f"got {lock!r}"
            )
        unknown = sorted(set(lock) - {"line", "to", "offset"})
        if unknown:
            raise ConfigError(f"{where_lock}: unknown key '{unknown[0]}'; takes line, to, offset")
        if not all(isinstance(lock[k], str) for k in ("line", "to")) or lock["line"] == lock["to"]:
            raise ConfigError(f"{where_lock}: 'line' and 'to' must be two different line names")
        offset = lock.get("offset")
        if offset is not None and (
            isinstance(offset, bool) or not isinstance(offset, int | float)
        ):
            raise ConfigError(f"{where_lock}: 'offset' must be a number (Angstrom) or null")
    for name, value in cfg["models"].items():
        if not isinstance(value, str | dict):
            raise ConfigError(
                f"{where}: 'models.{name}' must be a path to a LineModel JSON file or a mapping"
            )
    for key in ("start", "end"):
        value = cfg["files"][key]
        if value is not None:
            import numpy as np

            try:
                np.datetime64(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: 'files.{key}' is not an ISO date: {value!r}") from exc
    chunks = cfg["chunks"]
    for dim, size in chunks.items():
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"{where}: 'chunks.{dim}' must be a positive integer, got {size!r}")


def validate_config(config: dict, *, where: str = "configuration", base_dir=None) -> dict:
    """Check a configuration mapping and fill in defaults.

    Parameters
    ----------
    config : dict
        A (possibly partial) configuration, as read from YAML.
    where : str
        Name used in error messages (normally the file name).
    base_dir : path-like, optional
        Folder that relative paths are resolved against (recorded as ``_base_dir``).

    Returns
    -------
    dict
        The complete configuration.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or invalid value; the message names the key.

    Examples
    --------
    >>> cfg = validate_config({"scheduler": {"kind": "threads"}})
    >>> cfg["output"]["resume"]
    True
    """
    if config is None:
        config = {}
    config = _renamed({k: v for k, v in config.items() if k != "_base_dir"}, where)
    cfg = _check(config, default_config(), (), where)
    _semantic_checks(cfg, where)
    _check_fip(cfg["fip"], where)
    cfg["_base_dir"] = str(Path(base_dir).resolve()) if base_dir is not None else str(Path.cwd())
    return cfg


def load_config(path) -> dict:
    """Read and validate a YAML configuration file.

    Raises
    ------
    ConfigError
        The file is not valid YAML or a key is invalid; the message names the file and key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return validate_config(raw, where=str(path), base_dir=path.parent)


def config_json(cfg: dict) -> str:
    """The configuration as a JSON string, for provenance attributes."""
    return json.dumps(cfg, sort_keys=True, default=str)


# --- the fip: section (FIP-bias maps in the batch; written by pipeline/fip_step.py) ---------
FIP_METHODS = ("lcr", "two-line")
_MULTI_TYPES[("fip", "density")] = (float, int, str)


def _shipped_dems() -> list[str]:
    return sorted(
        p.name[: -len(".dem")]
        for p in (files("saffron_xr") / "data" / "dem").iterdir()
        if p.name.endswith(".dem")
    )


def _check_dem(name, key: str, where: str) -> None:
    import os

    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: '{key}' must be a DEM name or a .dem file path, got {name!r}")
    if name in _shipped_dems() or name.endswith(".dem"):
        return
    xuvtop = os.environ.get("XUVTOP")
    if xuvtop and (Path(xuvtop) / "dem" / f"{name}.dem").is_file():
        return
    raise ConfigError(
        f"{where}: '{key}' names an unknown DEM {name!r}: use a DEM shipped with the package "
        f"({', '.join(_shipped_dems())}), a .dem file path, or a CHIANTI DEM name with XUVTOP "
        "set to a CHIANTI database"
    )


def _check_fip_lines(value, key: str, where: str) -> list[str]:
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list) or not lines:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of line ids, got {value!r}")
    for j, line in enumerate(lines):
        parts = line.split() if isinstance(line, str) else []
        try:
            ok = len(parts) == 2 and float(parts[1]) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{where}: '{key}[{j}]' must be a line id like \"ne_8 770.42\" (ion, rest "
                f"wavelength in Angstrom), got {line!r}"
            )
    return list(lines)


def _check_fip_set(entry, i: int, method: str, where: str) -> dict:
    key = f"fip.sets[{i}]"
    if not isinstance(entry, dict) or not {"name", "low", "high"} <= set(entry):
        raise ConfigError(
            f"{where}: '{key}' must be a mapping with name, low and high, got {entry!r}"
        )
    unknown = sorted(set(entry) - {"name", "low", "high"})
    if unknown:
        raise ConfigError(f"{where}: unknown key '{key}.{unknown[0]}'; takes name, low, high")
    name = entry["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(
            f"{where}: '{key}.name' must be a non-empty text without '/', got {name!r}"
        )
    low = _check_fip_lines(entry["low"], f"{key}.low", where)
    high = _check_fip_lines(entry["high"], f"{key}.high", where)
    both = sorted(set(low) & set(high))
    if both:
        raise ConfigError(f"{where}: '{key}': lines {both} are both in low and high")
    if method == "two-line" and (len(low) != 1 or len(high) != 1):
        raise ConfigError(
            f"{where}: '{key}': fip.method two-line takes exactly one low and one high line"
        )
    return {"name": name, "low": low, "high": high}


def _check_fip(fip: dict, where: str) -> None:
    """Check the ``fip`` section of a typed configuration; normalises it in place."""
    if fip["method"] not in FIP_METHODS:
        raise ConfigError(
            f"{where}: 'fip.method' must be one of {', '.join(FIP_METHODS)}, got {fip['method']!r}"
        )
    if not isinstance(fip["sets"], list) or (fip["enabled"] and not fip["sets"]):
        raise ConfigError(f"{where}: 'fip.sets' must be a non-empty list of line sets")
    fip["sets"] = [_check_fip_set(s, i, fip["method"], where) for i, s in enumerate(fip["sets"])]
    names = [s["name"] for s in fip["sets"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: 'fip.sets' names must be unique, got {names}")
    density = fip["density"]
    if isinstance(density, str):
        try:  # YAML reads 1e9 (no dot) as text
            density = float(density)
        except ValueError:
            if not density.strip():
                raise ConfigError(f"{where}: 'fip.density' is empty") from None
    if isinstance(density, int | float) and not density > 0:
        raise ConfigError(f"{where}: 'fip.density' must be positive (cm-3), got {density!r}")
    fip["density"] = float(density) if isinstance(density, int | float) else density
    if not isinstance(fip["dems"], list) or not fip["dems"]:
        raise ConfigError(f"{where}: 'fip.dems' must be a non-empty list of DEM names")
    for i, dem in enumerate(fip["dems"]):
        _check_dem(dem, f"fip.dems[{i}]", where)
    if not fip["abundance"]:
        raise ConfigError(f"{where}: 'fip.abundance' must name a CHIANTI abundance set")
    if not fip["regularization"] >= 0:
        raise ConfigError(f"{where}: 'fip.regularization' must be >= 0")


def resolve_path(cfg: dict, path) -> Path:
    """``path`` (``~`` expanded) relative to the configuration file's folder, unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(cfg["_base_dir"]) / p
