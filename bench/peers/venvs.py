"""One virtualenv per peer, created by the benchmark from PyPI and reused while its pins match.

The peers cannot share an environment (tap-hubspot and tap-salesforce pin different
``singer-python``/``requests``; the two Airbyte sources need different ``airbyte-cdk`` and
``pendulum`` majors), nor crmhub's. Versions are those of ``shared/PEERS.md``. A venv is reused when
the ``.crmhub-pins`` file written after a successful install lists exactly the same pins.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

__all__ = ["PINS", "ensure_venv"]

PINS: dict[str, tuple[str, ...]] = {
    # dlt's verified sources are not on PyPI (--dlt-sources); simple-salesforce is their requirement
    "dlt": ("dlt==1.31.0", "simple-salesforce==1.12.10"),
    "tap-hubspot": ("tap-hubspot==4.5.0",),
    "tap-salesforce": ("tap-salesforce==2.8.1",),
    "airbyte-source-hubspot": ("airbyte-source-hubspot==5.7.0",),
    "airbyte-source-salesforce": ("airbyte-source-salesforce==2.10.3",),
}
_MARKER = ".crmhub-pins"


def ensure_venv(root: Path, name: str, log: Path | None = None) -> Path:
    """The ``bin`` directory of ``root/name``, creating the venv and installing its pins if needed."""
    pins = PINS[name]
    path = root / name
    marker = path / _MARKER
    if marker.exists() and marker.read_text().split() == list(pins):
        return path / "bin"
    if path.exists():
        shutil.rmtree(path)
    print(f"creating {path} with {' '.join(pins)}", file=sys.stderr)
    venv.EnvBuilder(with_pip=True).create(path)
    with (log or Path("/dev/null")).open("ab") as out:
        subprocess.run(  # noqa: S603 - pip of the venv just created, pinned packages from PyPI
            [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *pins],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    marker.write_text("\n".join(pins) + "\n")
    return path / "bin"
