"""Where a file's outputs go, and whether a finished run may skip it (``output.resume``)."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import shutil
from pathlib import Path

from .config import resolve_path

__all__ = ["output_path", "resume_state", "fingerprint", "input_identity", "products"]

log = logging.getLogger(__name__)

#: Configuration sections whose values change the numbers in a results file.
RESULT_SECTIONS = ("windows", "prep", "catalog", "models", "fuse", "locks", "derive")


def output_path(cfg, path: Path, window: str = "all", level: str = "l3") -> Path:
    """Output file name for an input file, from ``output.folder`` and ``output.template``."""
    from ..errors import SpiceFileError
    from ..io.filenames import parse_spice_filename
    from ..io.netcdf import output_name

    attrs = {"filename": Path(path).name}
    try:
        parsed = parse_spice_filename(path)
    except SpiceFileError:
        pass  # a non-standard name: only {stem} is available
    else:
        attrs.update(
            SPIOBSID=parsed.spiobsid,
            RASTERNO=parsed.rasterno,
            **{"DATE-OBS": parsed.date.isoformat()},
        )
    folder = resolve_path(cfg, cfg["output"]["folder"])
    out = folder / output_name(cfg["output"]["template"], attrs, window=window, level=level)
    if cfg["output"].get("format") == "zarr" and out.suffix == ".nc":
        out = out.with_suffix(".zarr")  # a Zarr store (a folder)
    return out


def _file_text_hash(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def fingerprint(cfg) -> dict:
    """What the numbers of a results file depend on, besides the input file itself.

    The configuration sections that change results (not the scheduler, chunks, file
    selection or output options), the content of model/catalog files they name, and the
    package version.
    """
    from .._meta import __version__

    fp = {key: cfg[key] for key in RESULT_SECTIONS}
    files = {}
    if cfg["catalog"]["path"]:
        files["catalog.path"] = _file_text_hash(resolve_path(cfg, cfg["catalog"]["path"]))
    for name, model in cfg["models"].items():
        if isinstance(model, str):
            files[f"models.{name}"] = _file_text_hash(resolve_path(cfg, model))
    fp["files"] = files
    fp["saffron_xr_version"] = __version__
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def input_identity(path: Path) -> dict:
    """Size and modification time of an input file (a changed input is redone)."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _differences(old, new, prefix="") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def products(cfg, out: Path, windows) -> dict[str, list[Path]]:
    """The requested products besides the results file, by kind."""
    made = {}
    if cfg["output"]["quicklook"]:
        made["quicklook"] = [out.with_suffix(".png")]
    if cfg["output"]["l3_fits"]:
        made["L3 FITS"] = [l3_path(out, name) for name in windows]
    return made


def l3_path(out: Path, window: str) -> Path:
    """The L3 FITS file of one window of the results file ``out``."""
    return out.with_name(f"{out.stem}_{window}_L3.fits")


#: What reading an existing results file can raise when it is damaged or not a results file
#: (netCDF/HDF5 report damage as OSError, a wrong layout as ValueError or KeyError).
_UNREADABLE = (OSError, ValueError, KeyError, RuntimeError)


def resume_state(cfg, path: Path) -> tuple[str, str]:
    """What resume should do for ``path``: ``(action, reason)``.

    ``action`` is ``"skip"`` (the results file is complete, made by the same version from
    the same configuration and the same input, with every requested product), ``"products"``
    (the results are current but a requested product is missing: make only the products) or
    ``"redo"``. ``reason`` says why, for the summary.
    """
    from ..io.netcdf import open_results

    out = output_path(cfg, path)
    if not out.exists():
        return "redo", ""
    try:
        with open_results(out) as existing:
            attrs = dict(existing.attrs)
            windows = list(existing.children)
    except _UNREADABLE as exc:
        log.info("%s: the existing output %s is unreadable (%s): redone", path, out, exc)
        return "redo", f"the existing output is unreadable ({type(exc).__name__})"
    if attrs.get("saffron_xr_complete", 0) != 1:
        return "redo", "the existing output is incomplete"
    try:
        stored = json.loads(attrs.get("saffron_xr_fingerprint", "null"))
        identity = json.loads(attrs.get("saffron_xr_input", "null"))
    except ValueError:
        stored = identity = None
    if stored is None or identity is None:
        return "redo", "the existing output does not record how it was made"
    now = fingerprint(cfg)
    if stored.get("saffron_xr_version") != now["saffron_xr_version"]:
        return "redo", (
            f"made by saffron_xr {stored.get('saffron_xr_version')}, this is "
            f"{now['saffron_xr_version']}"
        )
    changed = _differences(stored, now)
    if changed:
        return "redo", "configuration changed: " + ", ".join(changed)
    if identity != input_identity(path):
        return "redo", "the input file changed (size or modification time)"
    missing = [kind for kind, paths in products(cfg, out, windows).items()
               if not all(p.exists() for p in paths)]  # fmt: skip
    if missing:
        return "products", "missing " + " and ".join(missing)
    return "skip", ""


def remove_partial_outputs(out: Path) -> None:
    """Delete ``.part`` files a killed writer left for ``out`` and its products (quicklook,
    L3 FITS; see ``io.netcdf.to_netcdf``)."""
    if not out.parent.is_dir():
        return
    for part in out.parent.glob(f".{glob.escape(out.stem)}*.part"):
        log.info("removing the partial output %s", part)
        if part.is_dir():  # a Zarr store
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)
