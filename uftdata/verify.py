"""Is a mixture folder exactly what its `manifest.json` says it is?

`export` and `publish` refuse a folder that is not (`check_mixture`); `inspect` lists every problem
(`mixture_problems`). A shard edited, replaced, removed or added after mixing would otherwise reach a
trainer or the Hub under the manifest's content hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from uftdata.errors import UftDataError
from uftdata.mixout import MANIFEST, sha256_file


def mixture_problems(folder: Path) -> list[str]:
    """One line per difference between `folder` and its manifest, `PATH: what`; empty when it matches."""
    return [f"{path}: {what}" for path, what in _problems(Path(folder))]


def check_mixture(folder: Path) -> dict:
    """The manifest of the mixture folder `folder`; UftDataError naming the first file that differs."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise UftDataError(str(manifest_path), "not found: not a finished mixture folder",
                           fix="Build the mixture with `uftdata mix` (its manifest is written last).")
    problems = _problems(folder)
    if problems:
        path, what = problems[0]
        more = f" ({len(problems) - 1} more problem(s); `uftdata inspect {folder}` lists all)" if len(problems) > 1 else ""
        raise UftDataError(str(folder / path), what + more,
                           fix="Rebuild the mixture with `uftdata mix`, or restore the file.")
    return _read_manifest(manifest_path)


def _problems(folder: Path) -> list[tuple[str, str]]:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return [(MANIFEST, "not found: not a finished mixture folder")]
    try:
        manifest = _read_manifest(manifest_path)
    except UftDataError as error:
        return [(MANIFEST, error.what)]
    problems = []
    listed = set()
    for entry in manifest.get("files", []):
        listed.add(entry["path"])
        shard = folder / entry["path"]
        if not shard.is_file():
            problems.append((entry["path"], "listed in manifest.json but missing"))
        elif sha256_file(shard) != entry["sha256"]:
            problems.append((entry["path"], "sha256 differs from manifest.json (modified after mixing)"))
    # `datasets` loads every data/{split}-* file the card's patterns match, listed or not.
    for shard in sorted((folder / "data").glob("*.parquet")):
        if shard.relative_to(folder).as_posix() not in listed:
            problems.append((shard.relative_to(folder).as_posix(), "not listed in manifest.json (added after mixing)"))
    return problems


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UftDataError(str(path), f"is not valid JSON ({error})", fix="Rebuild the mixture with `uftdata mix`.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise UftDataError(str(path), "has no `files` list", fix="Rebuild the mixture with `uftdata mix`.")
    return manifest
