"""A charger-firmware wheel built at test time from the source tree, offline, for the installer tests.

Why not `pip wheel`: setuptools needs the `wheel` package (not in the test venv) or build isolation
(downloads setuptools from an index), and the tests must run offline. This writes the same wheel
(PEP 427: the packages of setup.cfg `[options] packages` with its `package_dir`, the `console_scripts`
entry points, METADATA, WHEEL and a RECORD with sha256 hashes) straight from setup.cfg, so what pip
installs is what setup.cfg declares. `version` rebuilds the tree as another version (setup.cfg's and
firmware/__init__.py's), to have an "old" and a "new" release. It must never modify the tree.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import re
import zipfile
from pathlib import Path

__all__ = ["build_wheel", "source_version"]


def _config(src: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(src / "setup.cfg")
    return parser


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def source_version(src: Path) -> str:
    """setup.cfg's `[metadata] version`."""
    return _config(src)["metadata"]["version"].strip()


def _package_dirs(src: Path, cfg: configparser.ConfigParser) -> dict[str, Path]:
    mapping = {}
    for line in _lines(cfg["options"].get("package_dir", "")):
        name, _, where = line.partition("=")
        mapping[name.strip()] = src / where.strip()
    return {pkg: mapping.get(pkg, src / pkg.replace(".", "/")) for pkg in _lines(cfg["options"]["packages"])}


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def build_wheel(src: Path, out_dir: Path, *, version: str | None = None) -> Path:
    """The wheel of the tree `src` (as `version`, default setup.cfg's) in `out_dir`; returns its path."""
    cfg = _config(src)
    name = cfg["metadata"]["name"].strip()
    old_version = source_version(src)
    version = version or old_version
    dist = f"{name.replace('-', '_')}-{version}"
    files: dict[str, bytes] = {}
    for package, directory in _package_dirs(src, cfg).items():
        for path in sorted(directory.glob("*.py")):
            data = path.read_bytes()
            if package == "firmware" and path.name == "__init__.py":
                data = re.sub(rb'__version__ = "[^"]*"', f'__version__ = "{version}"'.encode(), data)
            files[f"{package.replace('.', '/')}/{path.name}"] = data
    requires = "".join(f"Requires-Dist: {req}\n" for req in _lines(cfg["options"]["install_requires"]))
    files[f"{dist}.dist-info/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                           f"Requires-Python: {cfg['options']['python_requires'].strip()}\n"
                                           f"{requires}").encode()
    files[f"{dist}.dist-info/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: tests.support.wheel\n"
                                        b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    scripts = _lines(cfg["options.entry_points"]["console_scripts"])
    files[f"{dist}.dist-info/entry_points.txt"] = ("[console_scripts]\n" + "\n".join(scripts) + "\n").encode()
    record = [_record_line(arcname, data) for arcname, data in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in files.items():
            archive.writestr(arcname, data)
    return wheel
