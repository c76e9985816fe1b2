"""A small sample tree for trying scanner out, written at run time.

The EICAR test files are created here rather than committed, so antivirus software on a user's
machine never quarantines the checkout.
"""

from __future__ import annotations

from pathlib import Path

from .testing import eicar

__all__ = ("write_sample",)


def write_sample(directory: str) -> int:
    root = Path(directory)
    files: dict[str, bytes] = {
        "README.txt": b"A sample tree for scanner: two EICAR test files, everything else clean.\n",
        "docs/report 2026.txt": b"Quarterly numbers, nothing to see here.\n" * 50,
        "docs/empty.txt": b"",
        "downloads/eicar.com": eicar(),
        "downloads/nested/deeper/invoice.pdf.exe": b"MZ" + b"\0" * 62 + eicar() + b"\n",
        "images/pixel.bin": bytes(range(256)) * 64,
        "unicode/caf\u00e9 \u2615.txt": "Un caf\u00e9, s'il vous pla\u00eet.\n".encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(files)
