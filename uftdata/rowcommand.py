"""The driver the three row commands share (`unfold`, `score`, `feedback`): read the inputs, write the
rows and the rejects file atomically, keep the summary in the file's footer, print it.

Each command module hands `run_rows_command` one `Produce`: a function from the expanded input
files to blocks of schema rows, counting into the summary as it goes.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.progress import Progress as ProgressBar

from uftdata.accounting import Summary, format_summary
from uftdata.errors import UftDataError
from uftdata.hub import HubOptions, is_hub_url
from uftdata.layouts import Command, Layout
from uftdata.reader import InputFile, Progress, expand_inputs
from uftdata.rejects import OnError, Rejects, open_rejects
from uftdata.rows import Adapter, convert_files
from uftdata.writer import open_rows

Produce = Callable[[list[InputFile], Rejects, Summary, Progress], Iterator[pl.DataFrame]]


@dataclass(frozen=True)
class RowsOutput:
    """The output options the three commands share (`-o`, `--on-error`, `--rejects`, `-q`, `--overwrite`)."""

    out: Path
    on_error: OnError
    rejects: Path | None = None  # default: OUT with .rejects.jsonl
    quiet: bool = False
    overwrite: bool = False


@contextmanager
def progress_bar(files: list[InputFile], quiet: bool) -> Iterator[Progress]:
    """A bytes progress bar over all inputs (on a terminal only; logs stay clean)."""
    total = sum(f.size() for f in files)
    with ProgressBar(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), transient=True, disable=quiet or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("reading", total=total)
        yield lambda n: bar.advance(task, n)


def run_rows_command(command: str, inputs: list[str], hub: HubOptions, output: RowsOutput, produce: Produce) -> Summary:
    """Read inputs, write rows atomically, rejects file, summary in the file footer; print the summary.

    Both outputs are checked before a record is read (README, "Outputs: what a command may replace"):
    never a folder, never an input, an existing file only if uftdata wrote it or with --overwrite. The
    rejects file is put in place right after the rows, so a failure leaves neither."""
    out, overwrite = output.out, output.overwrite
    if out.is_dir():
        raise UftDataError(str(out), "is a folder; -o names the Parquet file to write",
                           fix=f"Give a file, e.g. -o {out / 'rows.parquet'}.")
    files = expand_inputs(inputs, hub)
    local = [f.path for f in files if f.remote is None]  # hf:// inputs have no local path
    rejects = Rejects(output.on_error)
    rejects_file = output.rejects or out.with_name(out.name.removesuffix(".parquet") + ".rejects.jsonl")
    summary = Summary(command)
    metadata: dict[str, str] = {}
    with ExitStack() as stack:
        # Entered before the rows' output, so it is put in place after it.
        rejects_tmp = (stack.enter_context(open_rejects(rejects_file, overwrite=overwrite, inputs=[*local, out]))
                       if rejects.on_error == "skip" else None)
        with progress_bar(files, output.quiet) as advance, open_rows(out, metadata, overwrite=overwrite, inputs=local) as writer:
            for rows in produce(files, rejects, summary, advance):
                writer.write(rows)
            summary.check()
            metadata["uft.summary"] = json.dumps(summary.as_dict(), sort_keys=True)
            if rejects.count and rejects_tmp is not None:
                rejects.dump(rejects_tmp)
    print(format_summary(summary, out, rejects_file if rejects.count else None))
    return summary


def source_runs(source: str | None, inputs: list[str], files: list[InputFile]) -> list[tuple[str, list[InputFile]]]:
    """The `source` column of each input's rows, as (name, files) runs in input order: `--source`
    for all, else each input's own name (mixspec.source_name), so that several inputs to one command
    keep their names, and every file in a folder gets the folder's."""
    from uftdata.mixspec import source_name

    folders = [Path(p) for p in inputs if not is_hub_url(p) and Path(p).is_dir()]

    def name(f: InputFile) -> str:
        if source:
            return source
        if f.remote:
            return f.remote.repo_id.split("/")[1]
        folder = next((d for d in folders if d in f.path.parents), None)
        return source_name(folder.resolve().name if folder else f.name)

    return [(key, list(run)) for key, run in itertools.groupby(files, key=name)]


def convert_inputs(command: Command, inputs: list[str], fmt: str | None, source: str | None,
                   adapter_for: Callable[[Layout], Adapter]) -> Produce:
    """`score` and `feedback` rows: a per-record adapter (rows.convert_files) over every input,
    each under its source name."""

    def produce(files: list[InputFile], rejects: Rejects, summary: Summary, progress: Progress) -> Iterator[pl.DataFrame]:
        for name, named in source_runs(source, inputs, files):
            yield from convert_files(named, command=command, fmt=fmt, source=name, adapter_for=adapter_for,
                                     rejects=rejects, summary=summary, progress=progress)

    return produce
