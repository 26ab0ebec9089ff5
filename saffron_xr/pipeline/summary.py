"""What a batch run reports: one :class:`FileResult` per input file, a :class:`RunSummary`,
and the two exceptions of :func:`~saffron_xr.pipeline.runner.run`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["BatchError", "BatchInterrupted", "FileResult", "RunSummary", "CONVERGED_DEFINITION"]


class BatchError(ValueError):
    """The batch cannot run: a missing source, no input file, an unusable output folder.

    Raised by :func:`run` before any file is processed; the message is one line.
    """


class BatchInterrupted(KeyboardInterrupt):
    """:func:`run` was interrupted (Ctrl-C, or a signal turned into KeyboardInterrupt).

    ``summary`` holds the files finished before the interruption (a :class:`RunSummary`
    with ``interrupted`` set), ``in_flight`` the files being processed and ``current`` the
    first of them, if any; their outputs were not written (outputs are written atomically).
    """

    def __init__(self, summary: RunSummary, current: str | None = None, in_flight=()):
        super().__init__(f"interrupted after {len(summary.done)} file(s) done")
        self.summary = summary
        self.current = current
        #: every file being processed at the interruption (several with files in flight)
        self.in_flight = list(in_flight) or ([current] if current else [])


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
    #: medians over windows of the noise-calibration ratios (None: not calibrated)
    noise_floor_ratio: float | None = None
    noise_photon_ratio: float | None = None
    fip_output: str | None = None


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
