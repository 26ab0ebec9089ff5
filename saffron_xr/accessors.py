"""The ``.saffron`` accessors (DataArray, Dataset, DataTree) and ``.fip`` (Dataset).

Each method forwards in one line to a public function with the same explicit signature;
the accessors hold no state. Sections belong to sub-packages: add methods in yours.
"""

from __future__ import annotations

import xarray as xr


@xr.register_dataarray_accessor("saffron")
class SaffronDataArrayAccessor:
    """Methods on a SPICE radiance DataArray: preparation and fitting."""

    def __init__(self, obj):
        self._obj = obj

    # --- prep ---

    # --- fit ---

    # --- catalog ---

    # --- plot ---


@xr.register_dataset_accessor("saffron")
class SaffronDatasetAccessor:
    """Methods on a window Dataset or a fitted-parameter Dataset."""

    def __init__(self, obj):
        self._obj = obj

    # --- derive ---

    # --- io ---

    # --- plot ---


@xr.register_datatree_accessor("saffron")
class SaffronDataTreeAccessor:
    """Methods on a DataTree of SPICE windows or of per-window results."""

    def __init__(self, obj):
        self._obj = obj

    # --- catalog ---

    # --- io ---

    # --- plot ---


@xr.register_dataset_accessor("fip")
class FipDatasetAccessor:
    """FIP-bias (composition) methods on a fitted-parameter Dataset."""

    def __init__(self, obj):
        self._obj = obj

    # --- fip ---
