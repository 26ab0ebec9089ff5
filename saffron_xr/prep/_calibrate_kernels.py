"""numba parts of the noise calibration's statistics (`saffron_xr.prep.calibrate`).

The second differences of every lag and the robust variance per photon-fraction bin, in
single passes that release the GIL: in numpy they were ~0.2 CPU-s per window of a
composition raster, most of it holding the GIL while the other windows of the file were
being prepared on other threads. The arithmetic is that of the numpy formulation, term by
term in the same order (no fastmath), so the standardised differences are the same to the
bit; only the mean photon fraction of a bin is summed in another order.

Imported on first use by `calibrate._measure` (importing the package does not import numba).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._numba_flags import CACHE

_jit = numba.njit(nogil=True, cache=CACHE)


@_jit
def second_differences(values, signal, photon, floor, axis, lags):
    """Standardised second differences and photon fractions along ``axis`` (0 or 1).

    All four arrays are float64 ``(y, wavelength, rest)``. For each lag L in ``lags`` in
    turn, over the samples with both neighbours at +-L inside the array (C order):
    ``d = I - (I[-L] + I[+L]) / 2``, its model variance ``photon_var + floor_var`` with
    ``photon_var = photon s + (photon[-L] s[-L] + photon[+L] s[+L]) / 4`` (s: the local
    signal) and ``floor_var`` likewise; kept where d and the variance are finite and the
    variance positive. Returns ``(d / sqrt(variance), photon_var / variance)``.
    """
    ny, nw, nr = values.shape
    size = 0
    for lag in lags:
        if axis == 0:
            size += max(ny - 2 * lag, 0) * nw * nr
        else:
            size += ny * max(nw - 2 * lag, 0) * nr
    z = np.empty(size)
    phi = np.empty(size)
    n = 0
    for lag in lags:
        di = lag if axis == 0 else 0
        dj = lag if axis == 1 else 0
        for i in range(di, ny - di):
            for j in range(dj, nw - dj):
                for k in range(nr):
                    c = values[i, j, k]
                    m = values[i - di, j - dj, k]
                    p = values[i + di, j + dj, k]
                    d = c - 0.5 * (m + p)
                    photon_var = photon[i, j, k] * signal[i, j, k] + 0.25 * (
                        photon[i - di, j - dj, k] * signal[i - di, j - dj, k]
                        + photon[i + di, j + dj, k] * signal[i + di, j + dj, k]
                    )
                    total = (
                        photon_var
                        + floor[i, j, k]
                        + 0.25 * (floor[i - di, j - dj, k] + floor[i + di, j + dj, k])
                    )
                    if math.isfinite(d) and math.isfinite(total) and total > 0.0:
                        z[n] = d / math.sqrt(total)
                        phi[n] = photon_var / total
                        n += 1
    return z[:n], phi[:n]


@_jit
def binned_robust_variance(z, phi, edges, min_count, mad_to_sigma):
    """Rows ``(bin, mean phi, (mad_to_sigma * MAD(z))**2, count)`` of the bins of ``phi``
    (``edges[k] <= phi < edges[k + 1]``; below the first edge: bin 0, from the last edge
    on: the last bin) holding at least ``min_count`` values. MAD: median absolute deviation
    from the median.
    """
    nb = edges.shape[0] - 1
    n = z.shape[0]
    index = np.empty(n, np.int64)
    counts = np.zeros(nb, np.int64)
    for t in range(n):
        x = phi[t]
        # the number of edges <= x, less one (a count, not a binary search: the photon
        # fractions come in no order, and a search's branches would mostly mispredict)
        above = 0
        for e in range(nb + 1):
            above += edges[e] <= x
        b = nb - 1 if x != x else min(max(above - 1, 0), nb - 1)  # NaN sorts last
        index[t] = b
        counts[b] += 1
    start = np.zeros(nb + 1, np.int64)
    for b in range(nb):
        start[b + 1] = start[b] + counts[b]
    fill = start[:nb].copy()
    z_sorted = np.empty(n)
    phi_sorted = np.empty(n)
    for t in range(n):  # stable: each bin keeps the order of the input
        b = index[t]
        z_sorted[fill[b]] = z[t]
        phi_sorted[fill[b]] = phi[t]
        fill[b] += 1
    rows = np.empty((nb, 4))
    n_rows = 0
    for b in range(nb):
        count = counts[b]
        if count < min_count or count == 0:
            continue
        lo = start[b]
        hi = start[b + 1]
        centre = _median_in_place(z_sorted, lo, hi)
        for t in range(lo, hi):
            z_sorted[t] = abs(z_sorted[t] - centre)
        mad = _median_in_place(z_sorted, lo, hi)
        rows[n_rows, 0] = b
        rows[n_rows, 1] = np.mean(phi_sorted[start[b] : start[b + 1]])
        rows[n_rows, 2] = (mad_to_sigma * mad) ** 2
        rows[n_rows, 3] = count
        n_rows += 1
    return rows[:n_rows].copy()


@_jit
def _select_in_place(a, lo, hi, k):
    """The k-th smallest value of a[lo:hi] (lo <= k < hi), by quickselect: a[lo:hi] is
    reordered so that nothing before k is larger than it. Values must not be NaN."""
    while hi - lo > 1:
        mid = (lo + hi - 1) >> 1
        x = a[lo]
        y = a[mid]
        w = a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), w))  # median of three
        i = lo
        j = hi - 1
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        # now a[lo:j+1] <= pivot, a[j+1:i] == pivot, a[i:hi] >= pivot
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return pivot
    return a[lo]


@_jit
def _median_in_place(a, lo, hi):
    """numpy's median of a[lo:hi] (the mean of the two middle values for an even count),
    reordering a[lo:hi]. Values must not be NaN."""
    n = hi - lo
    k = lo + n // 2
    upper = _select_in_place(a, lo, hi, k)
    if n % 2:
        return upper
    lower = a[lo]
    for t in range(lo + 1, k):  # the largest value before k
        lower = max(lower, a[t])
    return (lower + upper) / 2.0


def warm() -> None:
    """Compile (or load from numba's disk cache) the functions of this module, on tiny
    inputs of the types the calibration uses."""
    cube = np.ones((5, 5, 1))
    z, phi = second_differences(cube, cube, cube, cube, 0, np.array([2], dtype=np.int64))
    binned_robust_variance(z, phi, np.array([0.0, 1.0]), 1, 1.0)
