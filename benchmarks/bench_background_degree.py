"""Background degree 0 vs 1 on the real Ne VIII window (for the one-default decision).

Prints, per degree, the median reduced chi2, the number of CONVERGED and CONVERGED_AT_BOUND
pixels, and the per-pixel differences of the Ne VIII centroid (km/s) and amplitude between
the two fits. Run: ``PYTHONPATH=$PWD python benchmarks/bench_background_degree.py``.
"""

import numpy as np

import saffron_xr

LINE = "ne_8 770.42"
C_KM_S = 299_792.458


def main():
    tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    rad = tree["Ne_VIII_770_Peak_data"].dataset.radiance
    err = saffron_xr.spice_error(rad)
    fits = {}
    for degree in (0, 1):
        model = saffron_xr.guess_model(rad, error=err, background_degree=degree)
        p = saffron_xr.fit_lines(rad, model, error=err).compute()
        st = p.status.values
        usable = np.isin(st, [0, 1])
        print(
            f"degree {degree}: lines {model.lines}, median reduced chi2 "
            f"{np.nanmedian(p.chi2.values[usable]):.3f}, converged {(st == 0).sum()}, "
            f"at a bound {(st == 1).sum()}"
        )
        fits[degree] = p
    dv = (fits[1].centroid - fits[0].centroid).sel(line=LINE).values * C_KM_S / 770.42
    ratio = (fits[1].amplitude / fits[0].amplitude).sel(line=LINE).values
    lo, hi = np.nanpercentile(dv, [16, 84])
    print(
        f"centroid(1) - centroid(0): median {np.nanmedian(dv):+.1f} km/s, 16-84% "
        f"[{lo:+.1f}, {hi:+.1f}] km/s; amplitude ratio median {np.nanmedian(ratio):.3f}"
    )


if __name__ == "__main__":
    main()
