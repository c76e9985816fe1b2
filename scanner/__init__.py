"""scanner: scan everything, one NDJSON verdict line per target.

The public surface for code that builds on scanner: the records, the seams and the pipeline.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .model import ErrorInfo, Finding, Kind, Outcome, Status, Target, Verdict, encode_verdict

try:
    __version__ = version("scanner")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0+unknown"

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
