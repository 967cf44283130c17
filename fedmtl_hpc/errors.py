"""Errors that carry their meaning and their exit code.

Bad input (config, data, checkpoint, arguments) exits 2 with one line;
anything else exits 1. The CLI turns these into exit codes; library code
only raises them.
"""

__all__ = ["FedMTLError", "ConfigError", "DataError", "CheckpointError",
           "CommError", "NumericalError", "EXIT_OK", "EXIT_ERROR",
           "EXIT_BAD_INPUT", "EXIT_PREEMPTED"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 3  # stopped by a signal after writing a checkpoint: requeue me


class FedMTLError(Exception):
    """Base error; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR
    prefix = "error"

    def __str__(self) -> str:
        return f"{self.prefix}: {super().__str__()}"


class ConfigError(FedMTLError):
    """A config key breaks its rule; the message names the key and the rule."""

    exit_code = EXIT_BAD_INPUT
    prefix = "config error"


class DataError(FedMTLError):
    """A dataset is missing, truncated, corrupted or cannot be split as asked."""

    exit_code = EXIT_BAD_INPUT
    prefix = "data error"


class CheckpointError(FedMTLError):
    """A checkpoint is missing, incomplete, corrupted or does not fit the run."""

    exit_code = EXIT_BAD_INPUT
    prefix = "checkpoint error"


class CommError(FedMTLError):
    """The MPI layer cannot do what was asked (sizes, topology, launcher)."""

    exit_code = EXIT_ERROR
    prefix = "comm error"


class NumericalError(FedMTLError):
    """NaN or Inf in a loss or a parameter; the message names client and round."""

    exit_code = EXIT_ERROR
    prefix = "numerical error"
