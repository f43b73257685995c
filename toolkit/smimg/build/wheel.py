"""The smimg-entrypoint wheel every image installs, built here, deterministically, from the installed package.

Built on the host rather than with a build backend inside the image: the image may have no network, and fixed
timestamps keep the layer cacheable across builds. It carries no console scripts: the installer writes them at
fixed paths (``contract.BIN_DIR``) for the exec-form ENTRYPOINT, whichever bin folder the base's Python uses.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import smimg_entrypoint


def entrypoint_wheel() -> tuple[str, bytes]:
    """The wheel's file name and bytes; the same source gives the same bytes."""
    src = Path(smimg_entrypoint.__file__).parent
    version = smimg_entrypoint.__version__
    dist_info = f"smimg_entrypoint-{version}.dist-info"
    files: list[tuple[str, bytes]] = [(f"smimg_entrypoint/{p.name}", p.read_bytes()) for p in sorted(src.glob("*.py"))]
    files += [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: smimg-entrypoint\nVersion: {version}\n".encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: smimg\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = []
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return f"smimg_entrypoint-{version}-py3-none-any.whl", buffer.getvalue()
