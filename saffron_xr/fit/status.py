"""Per-pixel fit status codes (the ``status`` variable of a fit result).

The numba kernel writes the same integers (it reads them from this module as compile-time
constants), so ``FitStatus(int(ds.status[...]))`` always names a code.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["FitStatus"]


class FitStatus(IntEnum):
    """Outcome of the fit of one pixel.

    Parameters and their errors are finite for the "usable" codes ``CONVERGED``,
    ``CONVERGED_AT_BOUND``, ``MAX_ITER``, ``SINGULAR``, ``THRESHOLD_NOT_MET`` and
    ``NO_STEP`` (except the errors of parameters on a bound or not identifiable, NaN);
    they are NaN for all
    other codes (``chi2`` is NaN too unless the fit got as far as computing it).

    Attributes
    ----------
    CONVERGED : 0
        The Levenberg-Marquardt iteration met the tolerances with every free parameter
        strictly inside its bounds.
    CONVERGED_AT_BOUND : 1
        Converged, but at least one free parameter sits on one of its bounds: its error
        (from the curvature of chi2 at the bound) understates the true uncertainty.
    MAX_ITER : 2
        The iteration limit was reached before the tolerances were met; the parameters are
        those of the last accepted step.
    SINGULAR : 3
        Converged, but the normal matrix is exactly singular at the solution for a reason
        other than a bound or a vanished line (e.g. two lines with the same fixed centroid
        and width): the parameters that cannot be told apart have NaN errors, the others
        keep their values and errors.
    TOO_FEW_VALID : 4
        Fewer valid samples (finite data, finite positive error, inside a background
        segment) than the minimum (``min_valid``, at least the number of free parameters
        plus one); not attempted.
    ALL_NAN : 5
        No valid sample at all (e.g. pixels off the slit or outside the window); not
        attempted.
    BAD_INITIAL : 6
        A non-finite initial value (or one that gives a non-finite model); not attempted.
    THRESHOLD_NOT_MET : 7
        Adaptive (multi-level) fits only: the chosen level's fit converged but no level met
        the relative-error thresholds; the level with the smallest worst relative error
        (relative to its threshold) was kept.
    NO_STEP : 8
        No Levenberg-Marquardt step lowered chi2 from the starting point, so the parameters
        are the starting values (per-pixel linear solve of amplitudes and background at the
        starting centroids and widths), not a verified minimum.

    Per-line information that a single pixel code cannot carry lives in the per-line
    variables of a fit result: ``at_bound`` (a free parameter of the line sits on one of
    its bounds, whatever the pixel status; its error is then NaN) and ``detected``.

    One definition of "converged" is used everywhere (CLI summary, quicklook, derived
    maps): status ``CONVERGED``, see `converged`.

    Examples
    --------
    >>> FitStatus(0).name
    'CONVERGED'
    >>> int(FitStatus.ALL_NAN)
    5
    """

    CONVERGED = 0
    CONVERGED_AT_BOUND = 1
    MAX_ITER = 2
    SINGULAR = 3
    TOO_FEW_VALID = 4
    ALL_NAN = 5
    BAD_INITIAL = 6
    THRESHOLD_NOT_MET = 7
    NO_STEP = 8

    @classmethod
    def converged(cls) -> tuple[FitStatus, ...]:
        """The codes counted as "converged" everywhere in the package: ``CONVERGED`` only.

        A fit that converged with a parameter on a bound (``CONVERGED_AT_BOUND``) is usable
        but not counted as converged.

        Returns
        -------
        tuple of FitStatus
        """
        return (cls.CONVERGED,)

    @classmethod
    def usable(cls) -> tuple[FitStatus, ...]:
        """The codes whose parameters are finite (see the class docstring).

        Returns
        -------
        tuple of FitStatus
        """
        return (
            cls.CONVERGED,
            cls.CONVERGED_AT_BOUND,
            cls.MAX_ITER,
            cls.SINGULAR,
            cls.THRESHOLD_NOT_MET,
            cls.NO_STEP,
        )

    @classmethod
    def flag_attrs(cls) -> dict:
        """CF ``flag_values`` / ``flag_meanings`` attributes for a status variable.

        Returns
        -------
        dict
        """
        return {
            "flag_values": [int(s) for s in cls],
            "flag_meanings": " ".join(s.name.lower() for s in cls),
        }
