"""A PEP 517 build backend for this package, in the standard library only.

`pip install ./clients/python` then needs nothing from the network: no setuptools, no wheel.
The package is pure Python (src/starling_client), so a wheel is a zip of it plus its
metadata. The metadata comes from pyproject.toml's [project] table, which this file reads for
the few plain string keys it uses.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "starling_client"
SOURCE = os.path.join(ROOT, "src", PACKAGE)


def _project() -> Dict[str, str]:
    """The string keys of pyproject.toml's [project] table (name, version, ...)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if table is None:
        raise RuntimeError("pyproject.toml has no [project] table")
    values = dict(re.findall(r'^([A-Za-z-]+)\s*=\s*"([^"\n]*)"\s*$', table.group(1), re.M))
    for key in ("name", "version"):
        if key not in values:
            raise RuntimeError(f"pyproject.toml's [project] has no {key}")
    return values


def _dist_name(project: Dict[str, str]) -> str:
    return re.sub(r"[-_.]+", "_", project["name"]).lower()


def _metadata(project: Dict[str, str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines.append("Classifier: Typing :: Typed")
    readme = os.path.join(ROOT, "README.md")
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _package_files() -> List[Tuple[str, str]]:
    """(path inside the wheel, path on disk) of every file of the package, sorted."""
    files = []
    for directory, subdirectories, names in os.walk(SOURCE):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".py", ".typed")):
                disk = os.path.join(directory, name)
                files.append((os.path.relpath(disk, os.path.dirname(SOURCE)).replace(os.sep, "/"), disk))
    return files


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _dist_info(project: Dict[str, str]) -> Dict[str, bytes]:
    wheel = "Wheel-Version: 1.0\nGenerator: starling_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return {"METADATA": _metadata(project).encode(), "WHEEL": wheel.encode()}


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[dict] = None) -> str:
    project = _project()
    info = f"{_dist_name(project)}-{project['version']}.dist-info"
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    for name, data in _dist_info(project).items():
        with open(os.path.join(metadata_directory, info, name), "wb") as f:
            f.write(data)
    return info


def _write_wheel(wheel_directory: str, entries: List[Tuple[str, bytes]]) -> str:
    project = _project()
    dist = _dist_name(project)
    info = f"{dist}-{project['version']}.dist-info"
    filename = f"{dist}-{project['version']}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries + [(f"{info}/{name}", data) for name, data in _dist_info(project).items()]:
            wheel.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
            records.append(_record_line(path, data))
        records.append(f"{info}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(records) + "\n")
    return filename


def build_wheel(wheel_directory: str, config_settings: Optional[dict] = None,
                metadata_directory: Optional[str] = None) -> str:
    entries = []
    for path, disk in _package_files():
        with open(disk, "rb") as f:
            entries.append((path, f.read()))
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory: str, config_settings: Optional[dict] = None,
                   metadata_directory: Optional[str] = None) -> str:
    """An editable install: a .pth file that puts src/ on the path."""
    return _write_wheel(wheel_directory, [(f"__editable__.{PACKAGE}.pth", (os.path.join(ROOT, "src") + "\n").encode())])


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: Optional[dict] = None) -> str:
    return prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    project = _project()
    base = f"{_dist_name(project)}-{project['version']}"
    filename = f"{base}.tar.gz"
    paths = ["pyproject.toml", "README.md", "build_backend/starling_build.py"]
    paths += [os.path.relpath(disk, ROOT) for _, disk in _package_files()]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as sdist:
        for path in paths:
            if os.path.exists(os.path.join(ROOT, path)):
                sdist.add(os.path.join(ROOT, path), arcname=f"{base}/{path}", recursive=False)
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata(project).encode()
        info.size = len(data)
        sdist.addfile(info, io.BytesIO(data))
    return filename
