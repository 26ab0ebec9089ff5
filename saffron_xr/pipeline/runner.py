"""The batch runner: configured runs from SPICE L2 files to result files.

For each selected file: open lazily, prepare (noise model, despike, denoise, binning), guess
or load line models, fit, derive physical quantities, and write one netCDF file (one group per
window) atomically. A file that fails is logged and reported; the batch goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import shutil
import time
from pathlib import Path

import dask
import xarray as xr

from .._compute import compute_datasets
from ..errors import SpiceFileError
from .config import config_json, load_config, validate_config
from .scheduler import scheduler_context

__all__ = [
    "run",
    "check",
    "RunSummary",
    "FileResult",
    "BatchError",
    "BatchInterrupted",
    "process_tree",
    "output_path",
]

log = logging.getLogger(__name__)


class BatchError(ValueError):
    """The batch cannot run: a missing source, no input file, an unusable output folder.

    Raised by :func:`run` before any file is processed; the message is one line.
    """


class BatchInterrupted(KeyboardInterrupt):
    """:func:`run` was interrupted (Ctrl-C, or a signal turned into KeyboardInterrupt).

    ``summary`` holds the files finished before the interruption (a :class:`RunSummary`
    with ``interrupted`` set) and ``current`` the file being processed, if any; its output
    was not written (outputs are written atomically).
    """

    def __init__(self, summary: RunSummary, current: str | None = None):
        super().__init__(f"interrupted after {len(summary.done)} file(s) done")
        self.summary = summary
        self.current = current


@dataclasses.dataclass
class FileResult:
    """What happened to one input file.

    ``status`` is ``"done"``, ``"skipped"`` (its complete, current output exists),
    ``"failed"`` (``error`` says why) or ``"ignored"`` (found in a folder or glob but not a
    Level-2 file with data, e.g. an L3 file or a header-only file; ``error`` says which).
    ``note`` tells why a file was redone or only had products made.
    """

    path: str
    status: str
    output: str | None = None
    error: str | None = None
    seconds: float = 0.0
    n_spectra: int = 0
    n_converged: int = 0
    n_at_bound: int = 0
    failed_windows: dict = dataclasses.field(default_factory=dict)
    note: str = ""


#: How the run summary states the definition of "converged".
CONVERGED_DEFINITION = (
    "converged = fit status CONVERGED; fits converged with a parameter on a bound are "
    "counted separately"
)


@dataclasses.dataclass
class RunSummary:
    """The outcome of :func:`run`: one :class:`FileResult` per input file."""

    files: list[FileResult]
    scheduler: str
    seconds: float
    interrupted: bool = False

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def done(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "done"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def ignored(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "ignored"]

    @property
    def ok(self) -> bool:
        """No file failed, no window failed, not interrupted."""
        return not (self.failed or self.interrupted or any(f.failed_windows for f in self.done))

    def __str__(self) -> str:
        head = (
            f"saffron_xr run: {len(self.done)} done, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed"
        )
        if self.ignored:
            head += f", {len(self.ignored)} ignored"
        lines = [f"{head} in {self.seconds:.1f} s on {self.scheduler}"]
        if self.interrupted:
            lines[0] += " (interrupted)"
        for f in self.files:
            name = Path(f.path).name
            if f.status == "done":
                note = f"; {f.note}" if f.note else ""
                lines.append(f"  done     {name} -> {f.output} ({_fractions(f)}{note})")
                for window, reason in f.failed_windows.items():
                    lines.append(f"           window {window} FAILED: {reason}")
            elif f.status == "skipped":
                lines.append(f"  skipped  {name} (complete output {f.output} exists)")
            elif f.status == "ignored":
                lines.append(f"  ignored  {name}: {f.error}")
            else:
                lines.append(f"  FAILED   {name}: {f.error}")
        if self.done:
            lines.append(f"  ({CONVERGED_DEFINITION})")
        return "\n".join(lines)


def _fractions(f: FileResult) -> str:
    if not f.n_spectra:
        return f"no spectrum fitted, {f.seconds:.1f} s"
    return (
        f"{f.n_spectra} spectra fitted: {f.n_converged / f.n_spectra:.1%} converged, "
        f"{f.n_at_bound / f.n_spectra:.1%} converged at a bound, {f.seconds:.1f} s"
    )


def _resolve(base_dir, p) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def _is_fits_name(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(_FITS_SUFFIXES)


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _expand_sources(
    sources: list[str], output_folder: Path
) -> tuple[list[str], list[Path], set[str]]:
    """Files with SPICE names for ``select_files``, FITS files with other names, and the
    SPICE-named files found by scanning a folder or glob (rather than listed).

    Folders and globs are expanded here rather than in ``select_files``, which silently
    skips non-SPICE names there: a batch reports them instead. Files under the output folder
    are outputs, never inputs (L3 FITS outputs keep the input's SPICE-like name and would
    otherwise compete with it as a "version" of the same product).

    Raises
    ------
    BatchError
        A listed file or folder does not exist, or a glob matches nothing.
    """
    from ..errors import SpiceFileError
    from ..io.filenames import parse_spice_filename

    def spice_name(path: Path) -> bool:
        try:
            parse_spice_filename(path)
        except SpiceFileError:
            return False
        return True

    keep: list[str] = []
    rejected: list[Path] = []
    scanned_names: set[str] = set()
    for s in sources:
        p = Path(s)
        if p.is_dir():
            scanned = sorted(Path(root) / name for root, _d, names in os.walk(p) for name in names)
        elif glob.has_magic(s):
            scanned = sorted(Path(m) for m in glob.glob(s, recursive=True) if Path(m).is_file())
            if not scanned:
                raise BatchError(f"files.source: the pattern {s} matches no file")
        elif not p.exists():
            raise BatchError(f"files.source: {s} does not exist")
        elif not spice_name(p):
            rejected.append(p)
            continue
        else:
            keep.append(s)
            continue
        for f in scanned:
            if _inside(f, output_folder):
                continue
            if spice_name(f):
                keep.append(str(f))
                scanned_names.add(str(f))
            elif _is_fits_name(f):
                rejected.append(f)
    unique = {f.resolve(): f for f in rejected}
    return keep, list(unique.values()), scanned_names


def _input_files(cfg) -> tuple[list[Path], list[Path], set[str]]:
    """(SPICE files to process, FITS files with non-SPICE names found in the sources, the
    files found by scanning a folder or glob: among them, files that are not inputs -- L3,
    header-only -- are ignored with a reason rather than failed)."""
    from ..io.select import select_files

    fcfg = cfg["files"]
    base = cfg["_base_dir"]
    source = fcfg["source"]
    sources = [source] if isinstance(source, str) else list(source)
    resolved = [str(_resolve(base, s)) for s in sources]
    output_folder = _resolve(base, cfg["output"]["folder"])
    resolved, rejected, scanned = _expand_sources(resolved, output_folder)
    if not resolved:
        return [], rejected, scanned
    files = select_files(
        resolved,
        start=fcfg["start"],
        end=fcfg["end"],
        kind=fcfg["kind"],
        study=fcfg["study"],
        soop=fcfg["soop"],
        spiobsid=fcfg["spiobsid"],
    )
    return [Path(p) for p in files], rejected, scanned


def _not_an_input(path: Path) -> str | None:
    """Why ``path`` is not a file to fit (an L3 product, a header-only file), or None."""
    from astropy.io import fits

    from ..io.filenames import parse_spice_filename

    level = parse_spice_filename(path).level
    if level.upper() != "L2":
        return f"a {level} file (saffron_xr fits Level-2 files)"
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            if all(int(h.header.get("NAXIS", 0)) == 0
                   for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU))):  # fmt: skip
                return "header only: no data array in any window"
    except Exception:  # unreadable: open_spice says why
        return None
    return None


def _check_output_folder(folder: Path) -> None:
    """Raise :class:`BatchError` unless ``folder`` exists or can be created, and is writable.

    The folder itself is created if missing (its parent must exist: a mistyped path should
    not silently create a tree of folders).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BatchError(f"output.folder: {folder} is a file, not a folder")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise BatchError(
                f"output.folder: cannot create {folder}: its parent {folder.parent} does not exist"
            )
        try:
            folder.mkdir()
        except OSError as exc:
            raise BatchError(f"output.folder: cannot create {folder} ({exc.strerror})") from exc
    probe = folder / f".saffron_write_test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise BatchError(f"output.folder: cannot write in {folder} ({exc.strerror})") from exc
    finally:
        probe.unlink(missing_ok=True)


def check(config) -> list[str]:
    """Problems that would stop a configured batch from starting (empty if it can start).

    Checks the configuration, that the sources exist and give at least one input file, that
    the output folder is usable (without creating it), and that the scheduler can be set up
    (an address for ``address``, the optional packages for ``local``/``slurm``/``pbs``).

    Parameters
    ----------
    config : dict or path-like
        As for :func:`run`.

    Returns
    -------
    list of str
        One line per problem.
    """
    from .config import ConfigError

    try:
        cfg = _config_of(config)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    try:
        files, rejected, _scanned = _input_files(cfg)
        if not files and not rejected:
            problems.append("files.source: no SPICE file found in " + _sources_text(cfg))
    except (BatchError, FileNotFoundError, ValueError) as exc:
        problems.append(str(exc))
    folder = _resolve(cfg["_base_dir"], cfg["output"]["folder"])
    if folder.exists() and not folder.is_dir():
        problems.append(f"output.folder: {folder} is a file, not a folder")
    elif folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        problems.append(f"output.folder: {folder} is not writable")
    elif not folder.exists() and not folder.parent.is_dir():
        problems.append(
            f"output.folder: cannot create {folder}: its parent {folder.parent} does not exist"
        )
    elif not folder.exists() and not os.access(folder.parent, os.W_OK | os.X_OK):
        problems.append(f"output.folder: cannot create {folder}: {folder.parent} is not writable")
    kind = cfg["scheduler"]["kind"]
    if kind == "address" and not cfg["scheduler"]["address"]:
        problems.append("scheduler.address: required when scheduler.kind is address")
    modules = {"local": "distributed", "address": "distributed", "slurm": "dask_jobqueue",
               "pbs": "dask_jobqueue"}  # fmt: skip
    if kind in modules:
        import importlib.util

        if importlib.util.find_spec(modules[kind]) is None:
            problems.append(
                f"scheduler.kind {kind} needs the {modules[kind]} package (not installed)"
            )
    return problems


def _sources_text(cfg) -> str:
    source = cfg["files"]["source"]
    return ", ".join([source] if isinstance(source, str) else source)


def _config_of(config, scheduler=None, address=None) -> dict:
    if isinstance(config, dict):
        cfg = validate_config(config, base_dir=config.get("_base_dir"))
    else:
        cfg = load_config(config)
    if scheduler is not None or address is not None:
        if scheduler is not None:
            cfg["scheduler"]["kind"] = scheduler
        if address is not None:
            cfg["scheduler"]["address"] = address
        cfg = validate_config(cfg, base_dir=cfg["_base_dir"])
    return cfg


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
    folder = _resolve(cfg["_base_dir"], cfg["output"]["folder"])
    out = folder / output_name(cfg["output"]["template"], attrs, window=window, level=level)
    if cfg["output"].get("format") == "zarr" and out.suffix == ".nc":
        out = out.with_suffix(".zarr")  # a Zarr store (a folder)
    return out


def _load_catalog(cfg):
    from ..catalog import LineCatalog

    if cfg["catalog"]["path"]:
        return LineCatalog.load(_resolve(cfg["_base_dir"], cfg["catalog"]["path"]))
    return LineCatalog.default()


def _window_model(cfg, name, ds, radiance, error, catalog):
    from ..catalog import guess_model
    from ..fit.model import LineModel

    override = cfg["models"].get(name) or cfg["models"].get(ds.attrs.get("EXTNAME", ""))
    if override is not None:
        if isinstance(override, dict):
            return LineModel.from_dict(override)
        return LineModel.from_json(_resolve(cfg["_base_dir"], override).read_text())
    return guess_model(
        radiance,
        catalog,
        error=error,
        min_snr=cfg["catalog"]["min_snr"],
        background_degree=cfg["catalog"]["background_degree"],
    )


def _selected(cfg, names_and_ext):
    inc = cfg["windows"]["include"]
    exc = set(cfg["windows"]["exclude"])
    inc = [inc] if isinstance(inc, str) else inc
    out = []
    for name, ext in names_and_ext:
        if inc is not None and name not in inc and ext not in inc:
            continue
        if name in exc or ext in exc:
            continue
        out.append(name)
    return out


def _fit_noise(cfg: dict, radiance: xr.DataArray, terms):
    """The noise terms for model-based weights (issue 12), or None.

    With the noise model on, fits take their weights from the fitted model rather than from
    the noisy samples (``fit_lines(noise=...)``): the calibrated terms when calibrated,
    else the SPICE model's. Not after denoising, whose output no longer has the model's
    noise (the input errors are kept there, see below).
    """
    pcfg = cfg["prep"]
    if not pcfg["noise"]["enabled"] or pcfg["denoise"]["enabled"]:
        return None
    if terms is None:
        from ..prep import spice_noise_terms

        terms = spice_noise_terms(radiance, dark_factor=pcfg["noise"]["dark_factor"])
    return terms


def process_window(
    cfg: dict, name: str, ds: xr.Dataset, catalog, *, prepared_only: bool = False
) -> xr.Dataset:
    """Prepare, model, fit and derive one window Dataset; returns a lazy result Dataset.

    Only the mean spectrum used by the model guess is computed here. With
    ``prepared_only``, returns the prepared ``(radiance, error)`` instead (error may be None).
    """
    radiance = ds["radiance"]
    pcfg = cfg["prep"]
    error = None
    if pcfg["noise"]["enabled"]:
        from ..prep import spice_error

        error = spice_error(radiance, dark_factor=pcfg["noise"]["dark_factor"])
    # --- noise calibration (issue 12; prep.noise.calibrate): the model's floor and photon
    # terms rescaled to the noise measured in this window (one small statistics pass);
    # sigma from max(I, 0), no |I| rule; ratios and method go to the window's attrs.
    # noise_terms is what fit_lines(noise=...) takes for model-weighted fits.
    noise_terms, noise_provenance = None, {}
    if pcfg["noise"]["enabled"] and pcfg["noise"]["calibrate"]:
        from ..prep import calibrate_noise_terms, error_from_terms

        try:
            noise_terms = calibrate_noise_terms(radiance, dark_factor=pcfg["noise"]["dark_factor"])
        except ValueError as exc:  # e.g. a window too small to measure: keep the model
            log.warning("%s: noise not calibrated (%s); SPICE model kept", name, exc)
            noise_provenance = {"noise_calibration_method": f"not calibrated: {exc}"}
        else:
            error = error_from_terms(radiance, noise_terms)
            noise_provenance = {
                k: noise_terms.attrs[k]
                for k in (
                    "noise_floor_ratio",
                    "noise_signal_ratio",
                    "noise_signal_measured",
                    "noise_calibration_method",
                    "noise_calibration",
                )
            }
    # --- end of noise calibration
    if pcfg["despike"]["enabled"]:
        from ..prep import despike

        radiance, _changed = despike(
            radiance,
            n_sigma=pcfg["despike"]["threshold"],
            replace=pcfg["despike"]["replace"],
            dark_factor=pcfg["noise"]["dark_factor"],
        )
    if pcfg["denoise"]["enabled"]:
        from ..prep import denoise

        if error is None:
            raise ValueError("prep.denoise needs the noise model (prep.noise.enabled: true)")
        # keep the input errors: the denoiser's propagated error ignores the correlation it
        # introduces between neighbouring samples, so fitted errors would come out too small
        radiance = denoise(radiance, error, threshold=pcfg["denoise"]["threshold"])["radiance"]
    if prepared_only:
        return radiance, error
    return _fit_window(
        cfg,
        name,
        ds,
        radiance,
        error,
        catalog,
        noise_terms=noise_terms,
        provenance=noise_provenance,
    )


def _fit_window(
    cfg,
    name,
    ds,
    radiance,
    error,
    catalog,
    *,
    noise_terms=None,
    provenance=None,
    model_weights=True,
) -> xr.Dataset:
    """Model, fit and derive a prepared window (``ds`` gives the input radiance and attrs).

    With ``model_weights`` (and the noise model on), the fit takes its weights from the
    fitted model (`_fit_noise`); fused windows are fitted with their errors only.
    """
    from .. import derive
    from ..fit.core import fit_lines

    pcfg = cfg["prep"]
    # the guess reads the mean spectrum of the *input* radiance: guessing from the prepared
    # one would compute despike/denoise twice (once here, once in the fit), about 70 s of a
    # 220 s full composition raster (benchmarks/bench_prep_memory.py); a few spikes among
    # ~160,000 pixels do not move the window's mean spectrum measurably
    model = _window_model(cfg, name, ds, ds["radiance"], error, catalog)
    locks = _apply_locks(cfg, name, model)
    levels = pcfg["binning"]["levels"]
    if len(levels) > 1 or levels[0] != 1:
        from ..prep import bin_levels

        if error is None:
            raise ValueError("prep.binning needs the noise model (prep.noise.enabled: true)")
        stacked = bin_levels(
            radiance, error, sizes=levels, min_valid=pcfg["binning"]["min_valid_fraction"]
        )
        params = fit_lines(
            stacked["radiance"],
            model,
            error=stacked["error"],
            level_dim="level",
            thresholds=dict(pcfg["binning"]["thresholds"]),
        )
    else:
        noise = _fit_noise(cfg, radiance, noise_terms) if model_weights else None
        params = fit_lines(radiance, model, error=error, noise=noise)
    dcfg = cfg["derive"]
    extra = {}
    if dcfg["radiance"]:
        extra.update(derive.radiance(params).data_vars)
    ref = dcfg["doppler_reference"]
    if ref is not None:
        extra.update(derive.doppler_velocity(params, reference=ref).data_vars)
    if dcfg["widths"]:
        extra.update(derive.fwhm(params).data_vars)
    out = params.assign(extra).assign_attrs(provenance or {})
    if locks:
        out.attrs["centroid_locks"] = json.dumps(locks)
    if "fused_windows" in ds.attrs:
        out.attrs["fused_windows"] = ds.attrs["fused_windows"]
    return _with_coordinate_units(out)


def _with_coordinate_units(ds: xr.Dataset) -> xr.Dataset:
    """Units on the helioprojective coordinates (arcsec) where the fit dropped them."""
    fixed = {}
    for name, long_name in (
        ("hpln", "helioprojective longitude (Solar X)"),
        ("hplt", "helioprojective latitude (Solar Y)"),
    ):
        if name in ds.coords and "units" not in ds[name].attrs:
            fixed[name] = ds[name].assign_attrs(units="arcsec", long_name=long_name)
    return ds.assign_coords(fixed) if fixed else ds


def _apply_locks(cfg, name: str, model) -> list[dict]:
    """Tie centroids of line pairs as ``cfg["locks"]`` asks; returns the locks applied.

    A lock whose lines are not both in the window's model is logged and left out (a window
    holds only the lines in its wavelength range, and weak lines are dropped by the guess).
    """
    applied = []
    lines = set(model.lines)
    for lock in cfg["locks"]:
        line, to, offset = lock["line"], lock["to"], lock.get("offset")
        if line in lines and to in lines:
            if offset is None:
                offset = (
                    model.line_info(line)["rest_wavelength"]
                    - model.line_info(to)["rest_wavelength"]
                )
            # the locked line follows its root: its own centroid bounds become the root's,
            # shifted (windows guessed apart can disagree on them by their offsets)
            lo, hi = model.line_info(to)["bounds"]["centroid"]
            model.set_bounds(line, "centroid", (lo + offset, hi + offset))
            model.tie_centroid(line, to, offset)
            applied.append({"line": line, "to": to, "offset": model.tie_of(line, "centroid")[2]})
        elif line in lines or to in lines:
            log.warning(
                "window %s: lock %s -> %s not applied: %s is not in the model (lines: %s)",
                name,
                line,
                to,
                to if line in lines else line,
                ", ".join(model.lines),
            )
    return applied


def _node_of(tree: xr.DataTree, name: str) -> str | None:
    """The node name of a window given by node name or EXTNAME, or None."""
    from ..io.reader import window_node_name

    if name in tree.children:
        return name
    for node, child in tree.children.items():
        if child.dataset.attrs.get("EXTNAME") == name or window_node_name(name) == node:
            return node
    return None


def _fuse_groups(cfg, tree: xr.DataTree) -> list[list[str]]:
    """``cfg["fuse"]`` as node names; a group naming an absent window is an error."""
    groups = []
    for group in cfg["fuse"]:
        nodes = [_node_of(tree, w) for w in group]
        missing = [w for w, n in zip(group, nodes, strict=True) if n is None]
        if missing:
            raise ValueError(
                f"fuse: no window {', '.join(map(repr, missing))} in the file; its windows are "
                + ", ".join(tree.children)
            )
        groups.append(nodes)
    return groups


def _fused_name(nodes: list[str]) -> str:
    return "+".join(nodes)


def _process_fused(cfg, tree: xr.DataTree, nodes: list[str], catalog) -> xr.Dataset:
    """Prepare each window of a fuse group, join them along wavelength, fit them together."""
    from ..catalog import fuse_windows

    parts = {}
    for node in nodes:
        ds = tree[node].dataset
        radiance, error = process_window(cfg, node, ds, catalog, prepared_only=True)
        part = xr.Dataset({"radiance": radiance, "input_radiance": ds["radiance"]}, attrs=ds.attrs)
        if error is not None:
            part["error"] = error
        parts[node] = part
    fused = fuse_windows(xr.DataTree.from_dict(parts), nodes, name=_fused_name(nodes))
    inputs = fused.drop_vars(["radiance"]).rename({"input_radiance": "radiance"})
    error = fused["error"] if "error" in fused else None
    return _fit_window(
        cfg, _fused_name(nodes), inputs, fused["radiance"], error, catalog, model_weights=False
    )


def _window_error(exc: Exception, node: str, extname: str | None) -> str:
    """One line naming the window by its node name (as ``saffron-xr info`` prints it)."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    if extname and extname != node:
        text = text.replace(repr(extname), repr(node)).replace(extname, node)
    return text


def process_tree(cfg: dict, tree: xr.DataTree, catalog=None) -> xr.DataTree:
    """Lazy results for every selected window of an opened file (a DataTree like the input).

    Windows listed together in ``cfg["fuse"]`` are fitted as one (node name: their node
    names joined by ``+``) and not on their own. A window that cannot be prepared or modelled
    (e.g. no catalog line in its range) fails alone: the others are fitted, and the failed
    ones are listed with their reasons in the root attribute ``failed_windows`` (a mapping
    node name -> reason). If every window fails, a ValueError lists them all.
    """
    catalog = catalog if catalog is not None else _load_catalog(cfg)
    pairs = [(n, c.dataset.attrs.get("EXTNAME", n)) for n, c in tree.children.items()]
    names = _selected(cfg, pairs)
    if not names:
        raise ValueError(
            "no window left after windows.include/exclude; the file has "
            + ", ".join(n for n, _ in pairs)
        )
    groups = _fuse_groups(cfg, tree)
    in_groups = {n for g in groups for n in g}
    units = [[n] for n in names if n not in in_groups] + groups
    out = xr.DataTree(xr.Dataset(attrs=dict(tree.attrs)))
    failed = {}
    for unit in units:
        name = unit[0] if len(unit) == 1 else _fused_name(unit)
        try:
            if len(unit) == 1:
                ds = process_window(cfg, name, tree[name].dataset, catalog)
            else:
                ds = _process_fused(cfg, tree, unit, catalog)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # one window fails alone
            extname = tree[unit[0]].dataset.attrs.get("EXTNAME") if len(unit) == 1 else None
            failed[name] = _window_error(exc, name, extname)
            log.warning("window %s failed: %s", name, failed[name])
            continue
        out[name] = xr.DataTree(ds)
    if not out.children:
        raise ValueError(
            "every window failed: " + "; ".join(f"{n}: {r}" for n, r in failed.items())
        )
    if failed:
        out.attrs["failed_windows"] = failed
    return out


def _count(results: xr.DataTree) -> tuple[int, int, int]:
    """(spectra fitted, of which converged, of which converged at a bound) over all windows.

    "Converged" is :meth:`FitStatus.converged` (status ``CONVERGED`` only); spectra with no
    or too few valid samples are not counted as fitted.
    """
    import numpy as np

    from ..fit.status import FitStatus

    n = conv = at_bound = 0
    skipped = [int(FitStatus.ALL_NAN), int(FitStatus.TOO_FEW_VALID)]
    good = [int(s) for s in FitStatus.converged()]
    for node in results.children.values():
        st = np.asarray(node.dataset["status"])
        n += int((~np.isin(st, skipped)).sum())
        conv += int(np.isin(st, good).sum())
        at_bound += int((st == int(FitStatus.CONVERGED_AT_BOUND)).sum())
    return n, conv, at_bound


# ----------------------------------------------------------------------------- resume


#: Configuration sections whose values change the numbers in a results file.
_RESULT_SECTIONS = ("windows", "prep", "catalog", "models", "fuse", "locks", "derive")


def _file_text_hash(path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def _fingerprint(cfg) -> dict:
    """What the numbers of a results file depend on, besides the input file itself.

    The configuration sections that change results (not the scheduler, chunks, file
    selection or output options), the content of model/catalog files they name, and the
    package version.
    """
    from .._meta import __version__

    fp = {key: cfg[key] for key in _RESULT_SECTIONS}
    files = {}
    if cfg["catalog"]["path"]:
        files["catalog.path"] = _file_text_hash(_resolve(cfg["_base_dir"], cfg["catalog"]["path"]))
    for name, model in cfg["models"].items():
        if isinstance(model, str):
            files[f"models.{name}"] = _file_text_hash(_resolve(cfg["_base_dir"], model))
    fp["files"] = files
    fp["saffron_xr_version"] = __version__
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def _input_identity(path: Path) -> dict:
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


def _products(cfg, out: Path, windows) -> dict[str, list[Path]]:
    """The requested products besides the netCDF file, by kind."""
    products = {}
    if cfg["output"]["quicklook"]:
        products["quicklook"] = [out.with_suffix(".png")]
    if cfg["output"]["l3_fits"]:
        products["L3 FITS"] = [_l3_path(out, name) for name in windows]
    return products


def _l3_path(out: Path, window: str) -> Path:
    return out.with_name(f"{out.stem}_{window}_L3.fits")


def _resume_state(cfg, path: Path) -> tuple[str, str]:
    """What resume should do for ``path``: ``(action, reason)``.

    ``action`` is ``"skip"`` (the results file is complete, made by the same version from
    the same configuration and the same input, with every requested product), ``"products"``
    (the results are current but a requested product is missing: make only the products) or
    ``"redo"``. ``reason`` says why, for the summary.
    """
    out = output_path(cfg, path)
    if not out.exists():
        return "redo", ""
    try:
        from ..io.netcdf import open_results

        with open_results(out) as existing:
            attrs = dict(existing.attrs)
            windows = list(existing.children)
    except Exception as exc:
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
    now = _fingerprint(cfg)
    if stored.get("saffron_xr_version") != now["saffron_xr_version"]:
        return "redo", (
            f"made by saffron_xr {stored.get('saffron_xr_version')}, this is "
            f"{now['saffron_xr_version']}"
        )
    changed = _differences(stored, now)
    if changed:
        return "redo", "configuration changed: " + ", ".join(changed)
    if identity != _input_identity(path):
        return "redo", "the input file changed (size or modification time)"
    missing = [kind for kind, paths in _products(cfg, out, windows).items()
               if not all(p.exists() for p in paths)]  # fmt: skip
    if missing:
        return "products", "missing " + " and ".join(missing)
    return "skip", ""


def _write_products(cfg, out: Path, progress: bool = False) -> tuple[int, int, int]:
    """Quicklook and L3 FITS from the written results (each written atomically)."""
    with _reopen(out) as written:
        if cfg["output"]["quicklook"]:
            from ..plot import quicklook

            quicklook(written, path=out.with_suffix(".png"))
        if cfg["output"]["l3_fits"]:
            from ..io.l3fits import to_l3_fits

            for name, node in written.children.items():
                to_l3_fits(node.dataset, _l3_path(out, name))
        return _count(written)


def _process_file(cfg, path: Path, catalog, progress: bool) -> FileResult:
    from ..io.netcdf import to_netcdf
    from ..io.reader import open_spice

    t0 = time.perf_counter()
    identity = _input_identity(path)
    tree = open_spice(path, chunks=dict(cfg["chunks"]), dumbbells=cfg["windows"]["dumbbells"])
    out_path = output_path(cfg, path)
    results = process_tree(cfg, tree, catalog)
    results.attrs.update(
        saffron_xr_version=_fingerprint(cfg)["saffron_xr_version"],
        configuration=config_json(cfg),
        saffron_xr_fingerprint=json.dumps(_fingerprint(cfg), sort_keys=True),
        saffron_xr_input=json.dumps(identity, sort_keys=True),
        input_files=path.name,
        saffron_xr_complete=1,
    )
    failed_windows = dict(results.attrs.get("failed_windows", {}))
    # products of an earlier run must not outlive results they no longer match
    for paths in _products(cfg, out_path, results.children).values():
        for p in paths:
            p.unlink(missing_ok=True)
    if _in_process_scheduler():
        # to_netcdf computes the windows one by one while it writes them: only the chunks
        # in flight and one window's variables are in memory, never all the results
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar(minimum=1.0)
        with ctx:
            to_netcdf(results, out_path, config=cfg, format=cfg["output"].get("format"))
    else:  # worker processes may not share this file system: gather the results here
        to_netcdf(
            _compute_tree(results, progress),
            out_path,
            config=cfg,
            format=cfg["output"].get("format"),
        )
    n, conv, at_bound = _write_products(cfg, out_path, progress)
    return FileResult(
        str(path),
        "done",
        str(out_path),
        seconds=time.perf_counter() - t0,
        n_spectra=n,
        n_converged=conv,
        n_at_bound=at_bound,
        failed_windows=failed_windows,
    )


@contextlib.contextmanager
def _reopen(path: Path):
    """A written results file, lazily; the file is closed on leaving the block.

    A handle left open would make later checks of this path (resume) read cached old content.
    """
    from ..io.netcdf import open_results

    tree = open_results(path)
    try:
        yield tree
    finally:
        tree.close()


def _in_process_scheduler() -> bool:
    """True if dask computes in this process (threads or synchronous, no distributed Client)."""
    from .scheduler import active_client

    sched = dask.config.get("scheduler", None)
    if sched in (None, "dask.distributed", "distributed"):
        return active_client() is None
    return sched in ("threads", "threading", "synchronous", "sync", "single-threaded")


def _compute_tree(results: xr.DataTree, progress: bool = False) -> xr.DataTree:
    """Compute every window of a result tree in one dask call (windows run in parallel)."""
    from .scheduler import active_client

    names = list(results.children)
    lazy = [results[n].dataset for n in names]
    client = None
    if dask.config.get("scheduler", None) in (None, "dask.distributed", "distributed"):
        client = active_client()
    if client is not None:
        persisted = [ds.persist() for ds in lazy]
        if progress:
            from distributed import progress as dist_progress

            dist_progress(
                [
                    v.data
                    for ds in persisted
                    for v in ds.variables.values()
                    if dask.is_dask_collection(v.data)
                ]
            )
        datasets = compute_datasets(*persisted)
    else:
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar(minimum=1.0)
        with ctx:
            datasets = compute_datasets(*lazy)
    out = xr.DataTree(xr.Dataset(attrs=dict(results.attrs)))
    for name, ds in zip(names, datasets, strict=True):
        out[name] = xr.DataTree(ds)
    return out


def run(
    config,
    *,
    progress: bool = False,
    scheduler: str | None = None,
    address: str | None = None,
    force: bool = False,
    allow_empty: bool = False,
) -> RunSummary:
    """Run a configured batch: select files, fit every window, write one result file each.

    Parameters
    ----------
    config : dict or path-like
        A configuration mapping (validated here) or a YAML file (see ``saffron-xr init``).
    progress : bool, default False
        Show progress bars (used by the command line; off when called from code).
    scheduler : str, optional
        Override ``scheduler.kind``.
    address : str, optional
        Override ``scheduler.address`` (the scheduler of ``scheduler.kind: address``).
    force : bool, default False
        Process every file even if ``output.resume`` would skip it.
    allow_empty : bool, default False
        Return an empty summary when the sources hold no SPICE file, instead of raising.

    Returns
    -------
    RunSummary
        Per-file outcome; failures carry their reason. A failing file never stops the batch.

    Raises
    ------
    BatchError
        Before any work: a source that does not exist, no input file (unless
        ``allow_empty``), or an output folder that cannot be created or written.
    BatchInterrupted
        On KeyboardInterrupt; it carries the summary of the files finished before.

    Notes
    -----
    With ``output.resume`` a file is skipped only if its results file is complete and was
    made by this package version, from the same result-relevant configuration (``windows``,
    ``prep``, ``catalog``, ``models``, ``fuse``, ``locks``, ``derive`` and the content of
    the model/catalog files they name) and from the same input file (size and modification
    time), and every requested product (quicklook, L3 FITS) exists. A file whose results are
    current but a product is missing gets only the missing products; otherwise it is redone,
    and the summary says why.
    """
    cfg = _config_of(config, scheduler, address)
    t0 = time.perf_counter()
    files, not_spice, scanned = _input_files(cfg)
    if not files and not not_spice and not allow_empty:
        raise BatchError(f"no SPICE file found in {_sources_text(cfg)}; nothing to do")
    folder = _resolve(cfg["_base_dir"], cfg["output"]["folder"])
    if files:
        _check_output_folder(folder)
    results: list[FileResult] = []
    for path in not_spice:
        log.error("FAILED %s", path)
        results.append(FileResult(str(path), "failed", error="not a SPICE file name"))
    catalog = _load_catalog(cfg)
    current = None
    sched_name = cfg["scheduler"]["kind"]
    try:
        with scheduler_context(cfg["scheduler"]) as sched_name:
            for i, path in enumerate(files):
                current = str(path)
                counter = f"[{i + 1}/{len(files)}]"
                results.append(
                    _run_one(cfg, path, catalog, progress, force, counter, str(path) in scanned)
                )
                current = None
    except KeyboardInterrupt as exc:
        summary = RunSummary(results, sched_name, time.perf_counter() - t0, interrupted=True)
        raise BatchInterrupted(summary, current) from exc
    return RunSummary(results, sched_name, time.perf_counter() - t0)


_KERNEL_NOTE = {"shown": False}


def _run_one(cfg, path: Path, catalog, progress, force, counter, scanned) -> FileResult:
    """Process (or skip) one file; a failure is returned, never raised.

    ``scanned``: the file was found in a folder or by a glob (not listed by the user).
    """
    t0 = time.perf_counter()
    log.info("%s %s: started", counter, path.name)
    try:
        reason = _not_an_input(path)
        if reason is not None:
            status = "ignored" if scanned else "failed"
            # the reason is printed once, in the summary
            log.log(logging.INFO if status == "ignored" else logging.ERROR,
                    "%s %s: %s", counter, path.name, status.upper())  # fmt: skip
            return FileResult(str(path), status, error=reason)
        out = output_path(cfg, path)
        _remove_partial_outputs(out)
        note = ""
        if cfg["output"]["resume"] and not force:
            action, note = _resume_state(cfg, path)
            if action == "skip":
                log.info("%s %s: skipped (complete output %s exists)", counter, path.name, out)
                return FileResult(str(path), "skipped", str(out))
            if action == "products":
                n, conv, at_bound = _write_products(cfg, out, progress)
                log.info("%s %s: done (%s made)", counter, path.name, note[len("missing ") :])
                return FileResult(
                    str(path), "done", str(out), seconds=time.perf_counter() - t0, n_spectra=n,
                    n_converged=conv, n_at_bound=at_bound,
                    note=f"results current, made the {note[len('missing '):]}",
                )  # fmt: skip
            note = f"redone: {note}" if note else ""
        elif force and out.exists():
            note = "redone: --force"
        if progress and not _KERNEL_NOTE["shown"]:
            _KERNEL_NOTE["shown"] = True
            log.info(
                "(the first file waits near 1%% while numba compiles the fit kernel, "
                "typically 10-20 s; later files start at once)"
            )
        result = _process_file(cfg, path, catalog, progress)
        result.note = note
        log.info(
            "%s %s: done in %.1f s%s",
            counter,
            path.name,
            result.seconds,
            f" ({len(result.failed_windows)} window(s) failed)" if result.failed_windows else "",
        )
        return result
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a bad file is reported, the batch goes on
        if isinstance(exc, SpiceFileError):  # the message starts with the path
            same = Path(exc.path).name == path.name
            reason = exc.problem if same else str(exc)
        elif isinstance(exc, (ValueError, FileNotFoundError)):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        # the reason is printed once, in the summary; the log names the file
        log.error("%s %s: FAILED", counter, path.name)
        log.debug("%s: %s", path, reason, exc_info=True)
        return FileResult(str(path), "failed", error=reason)


def _remove_partial_outputs(out: Path) -> None:
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
