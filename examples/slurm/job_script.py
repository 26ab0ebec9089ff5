"""Print the SLURM job script that ``saffron-xr run CONFIG`` would submit for its workers.

Needs dask-jobqueue (the ``hpc`` extra) but no SLURM installation: nothing is submitted.

Run::

    python job_script.py campaign.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dask
import yaml

from saffron_xr.pipeline.config import load_config
from saffron_xr.pipeline.scheduler import jobqueue_cluster

HERE = Path(__file__).resolve().parent


def _dotted(mapping, prefix="") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: dask.config.set replaces whole sections otherwise."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def job_script(config_path, dask_config=HERE / "dask-jobqueue.yaml") -> str:
    """The batch script of one worker job for the ``scheduler`` section of ``config_path``.

    ``dask_config``: a dask configuration file whose settings apply (None: dask's own).
    """
    cfg = load_config(config_path)
    settings = {}
    if dask_config is not None:
        settings = _dotted(yaml.safe_load(Path(dask_config).read_text()))
    with dask.config.set(settings):
        cluster = jobqueue_cluster(cfg["scheduler"])
        try:
            return cluster.job_script()
        finally:
            cluster.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=HERE / "campaign.yaml")
    parser.add_argument("--dask-config", default=HERE / "dask-jobqueue.yaml")
    args = parser.parse_args(argv)
    sys.stdout.write(job_script(args.config, args.dask_config) + "\n")


if __name__ == "__main__":
    main()
