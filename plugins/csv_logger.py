"""CSV logger (``zoo bench --log csv``): each run's validation curve as ``validation.csv`` in its
log folder, ``<out>/<benchmark>/logs/<run>/``: step, meta-training seconds, validation metric and
the last training loss, a row per validation."""

import csv

import metazoo

NAME = "csv"
COLUMNS = ("step", "time_s", "value", "loss")


@metazoo.hookimpl
def zoo_run_start(loggers, log_dir):
    if NAME in loggers and log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "validation.csv", "w", newline="") as handle:
            csv.writer(handle).writerow(COLUMNS)


@metazoo.hookimpl
def zoo_run_validation(step, value, time_s, loss, loggers, log_dir):
    if NAME in loggers and log_dir is not None:
        with open(log_dir / "validation.csv", "a", newline="") as handle:
            csv.writer(handle).writerow((step, f"{time_s:.3f}", repr(value), repr(loss)))
