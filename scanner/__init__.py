"""scanner: scan everything, one NDJSON verdict line per target.

The public surface for code that builds on scanner: the records, the seams and the pipeline.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see the worker note below)
if TYPE_CHECKING:
    from typing import Any

    from .model import ErrorInfo, Finding, Kind, Outcome, Status, Target, Verdict, encode_verdict

# The one place the version lives (pyproject.toml reads it from here); importlib.metadata would
# cost 60 ms of every start.
__version__ = "0.1.0"

__all__ = (
    "ErrorInfo",
    "Finding",
    "Kind",
    "Outcome",
    "Status",
    "Target",
    "Verdict",
    "__version__",
    "encode_verdict",
)


def __getattr__(name: str) -> Any:
    # The records are imported on first use: every worker process (python -m
    # scanner.engines._yara_worker) imports this package first and needs none of them.
    if name in __all__ and name != "__version__":
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'scanner' has no attribute {name!r}")
