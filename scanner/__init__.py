"""scanner: scan everything, one NDJSON verdict line per target.

The public surface for code that builds on scanner: the records, the seams and the pipeline.
"""

from __future__ import annotations

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
