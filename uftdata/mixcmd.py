"""`uftdata mix`: build the mixture (mixout.build_mixtures), print what each source gave, write the
rejects file. The spec comes from the command line or a recipe (mixspec); the planning is mix.py."""

from __future__ import annotations

import sys
from pathlib import Path

from uftdata.errors import UftDataError
from uftdata.mixout import build_mixtures
from uftdata.mixspec import MixtureSpec
from uftdata.rejects import OnError, Rejects


def run_mix(spec: MixtureSpec, out: Path | None, *, on_error: OnError = "raise", rejects: Path | None = None,
            quiet: bool = False, overwrite: bool = False) -> list[dict]:
    """Build `spec` into `out` (default: the spec's `out`); print the summary, and the rejects file's
    name when `on_error="skip"` set records aside (default: OUT.rejects.jsonl beside OUT)."""
    target = out or (Path(spec.out) if spec.out else None)
    if target is None:
        raise UftDataError("mix", "no output folder", fix="Pass -o MIXTURE_DIR (or set mixture.out in the recipe).")
    skip = Rejects(on_error)
    say = None if quiet else (lambda name: print(f"  writing {name}", file=sys.stderr))
    manifests = build_mixtures(spec, target, skip, say, overwrite=overwrite)
    print(format_mix(manifests, target, sweep=bool(spec.sweep)))
    if skip.count:
        written = rejects or target.with_name(target.name + ".rejects.jsonl")
        skip.write(written)
        print(f"  rejects: {written}")
    return manifests


def format_mix(manifests: list[dict], target: Path, *, sweep: bool) -> str:
    """Per mixture: its rows per split and content hash; per source: records in and used, the take,
    the rows it gave each split, and each reason rows were dropped."""
    lines = []
    for manifest in manifests:
        where = target / manifest["name"] if sweep else target
        counts = ", ".join(f"{split} {c['rows']}" for split, c in manifest["counts"].items())
        lines.append(f"mix: {where}: {counts} rows; content_hash {manifest['content_hash'][:16]}")
        for source in manifest["sources"]:
            acc = source["accounting"]
            lines.append(f"  {source['name']}: {acc['records_in']} in, {acc['records_used']} used, take {source['take']}"
                         f" -> train {source['rows_train']} (repeated {source['repeated_rows']}), test {source['rows_test']}")
            lines += [f"    dropped.{reason}: {n}" for reason, n in acc["dropped"].items()]
    return "\n".join(lines)
