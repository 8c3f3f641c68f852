"""TensorBoard logger (``zoo bench --log tensorboard``; ``pip install 'metazoo[tensorboard]'``):
the validation metric and training loss of each run against its step, and its hyperparameters
with the test result at the end, through ``torch.utils.tensorboard`` into
``<out>/<benchmark>/logs/<run>/tensorboard``. View with ``tensorboard --logdir OUT``."""

import metazoo

NAME = "tensorboard"
_writers: dict = {}  # run key -> SummaryWriter, for the runs of this process


@metazoo.hookimpl
def zoo_configure_loggers(loggers):
    if NAME in loggers:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise metazoo.UsageError("--log tensorboard needs TensorBoard: pip install 'metazoo[tensorboard]'") from None


@metazoo.hookimpl
def zoo_run_start(run, loggers, log_dir):
    if NAME in loggers and log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        _writers[run.key] = SummaryWriter(log_dir / "tensorboard")


@metazoo.hookimpl
def zoo_run_validation(run, step, value, loss):
    writer = _writers.get(run.key)
    if writer is not None:
        writer.add_scalar("validation", value, step)
        writer.add_scalar("train loss", loss, step)


@metazoo.hookimpl
def zoo_run_end(run, record):
    writer = _writers.pop(run.key, None)
    if writer is not None:
        hyperparameters = {k: v for k, v in (record.get("hyperparameters") or {}).items()
                           if isinstance(v, (int, float, str, bool))}
        result = {"test": record["test"]["mean"]} if record.get("status") == "ok" else {}
        writer.add_hparams(hyperparameters, result, run_name=".")
        writer.close()
