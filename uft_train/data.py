"""From a mixture split to tokenized examples (docs/design.md: "Loss x kind", "Tokenization and drops").

`read_split` reads a built mixture (never builds one), `check_kinds` refuses rows the loss does not
train on, `tokenize_split` renders and tokenizes every row once. Every row that does not become an
`Example` is counted under a reason in `DROP_REASONS`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import jinja2
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from uftdata import schema
from uftdata.errors import RecordError, UftDataError
from uftdata.manifest import MANIFEST, Manifest
from uftdata.verify import check_mixture

if TYPE_CHECKING:  # transformers loads in the trainer only: reading a mixture should not pay for it
    from transformers import PreTrainedTokenizerBase

Truncation = Literal["drop", "truncate_prompt_left"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)

# Reasons a row is dropped at tokenization; `prompt_truncated` (kept rows whose prompt lost leading
# tokens) is reported in the same counter but is not a drop.
DROP_REASONS = ("empty_prompt", "empty_completion", "too_long", "pair_incomplete", "partner_dropped")
PROMPT_TRUNCATED = "prompt_truncated"

COLUMNS = ("id", "prompt", "completion", "score", "kind", "label", "pair_id", "group", "source")
CHUNK_ROWS = 8192  # rows rendered and tokenized per batch call: bounds peak memory of the text lists


@dataclass(frozen=True)
class Example:
    """One tokenized row. The loss mask is `positions >= prompt_len`: lengths, never token ids."""

    row: int                     # position in the split's rows as read
    kind: str
    score: float
    label: bool | None
    pair_id: str | None
    group: str
    input_ids: tuple[int, ...]   # tokens of the rendered prompt, then those of the rendered completion
    prompt_len: int              # tokens of the rendered prompt (with the generation prompt)
    id: str                      # the row's `id` and `source`: provenance for eval_predictions.parquet
    source: str

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def read_split(path: Path, split: str, *, recipe: Path | None = None) -> pl.DataFrame | None:
    """The rows of `split` ("train", "test") of a mixture folder, in rank order; None if it has none.

    The mixture is verified against its manifest first (`verify_data`, once per process). A plain
    Parquet file in the row schema is the "train" split (and has no "test"), validated row by row.
    A folder without `manifest.json` is not a finished mixture: the error names the file and `uftdata mix`.
    """
    path = Path(path)
    manifest = verify_data(path, recipe=recipe)
    if manifest is None:
        return _read_files([path]) if split == "train" else None
    shards = manifest.shards(split)
    return _read_files([path / s.path for s in shards]) if shards else None


def verify_data(path: Path, *, recipe: Path | None = None) -> Manifest | None:
    """`data.path` checked before anything trains on it: a mixture folder against its manifest
    (uftdata.verify: every shard's sha256, no unlisted shard, counts, seed, content hash), a plain
    Parquet file row by row (uftdata.schema), with a note that it is not a verified mixture.
    Returns the manifest (None for a plain file). Done once per process while the files stay as
    they were: `read_split` calls it per split, and hashing a large mixture twice costs seconds."""
    path = Path(path)
    stamp = _stamp(path)
    done = _verified.get(path.resolve())
    if done is not None and done[0] == stamp:
        return done[1]
    if path.is_file():
        _validate_rows(path)
        if os.environ.get("RANK", "0") == "0":
            print(f"uft-train: note: {path} is a plain Parquet file, not a verified mixture (no manifest.json, "
                  "no content hash): its rows were validated, not checked against a build.", flush=True)
        manifest = None
    else:
        if not (path / MANIFEST).is_file():
            raise UftDataError(str(path / MANIFEST), "not found: the mixture is not built (or its build did not finish)",
                               fix=f"Build it with: uftdata mix {recipe or 'RECIPE.yaml'}")
        manifest = check_mixture(path)
    _verified[path.resolve()] = (stamp, manifest)
    return manifest


# data.path -> (its files' stamps when verified, its manifest): what `verify_data` already checked.
_verified: dict[Path, tuple[tuple, Manifest | None]] = {}


def _stamp(path: Path) -> tuple:
    """Size, mtime and inode of the file, or of a folder's manifest and every file under data/: a
    change to any of them makes `verify_data` check again."""
    files = [path] if path.is_file() else [path / MANIFEST, *sorted((path / "data").rglob("*"))]
    stamps = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        stamps.append((str(file), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stamps)


def _validate_rows(file: Path) -> None:
    """A plain Parquet file in the row schema with valid rows (schema, kinds, scores, labels, pairs):
    the first bad row is an error naming its row (0-based, as `datasets` counts) and field."""
    parquet = _parquet(file)
    problems = schema.schema_problems(parquet.schema_arrow)
    if problems:
        raise UftDataError(str(file), "is not in the row schema", got="; ".join(problems),
                           expected="the columns of uftdata/schema.py", fix="Write it with a uftdata command.")
    start, pairs, bad_rows = 0, [], 0
    first: RecordError | None = None
    try:
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=list(schema.COLUMNS)):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            bad = schema.row_problems(frame)
            if bad.height and first is None:
                row, field, problem = bad.row(0)
                first = RecordError(f"{file}: row {start + row} (id {frame['id'][row]})", field, problem)
            bad_rows += bad["row"].n_unique()
            pairs.append(frame.with_row_index("row", offset=start).filter(pl.col("kind") == "pairwise")
                         .select("row", "pair_id", "label"))
            start += batch.num_rows
    except (pa.ArrowException, OSError) as error:
        raise UftDataError(str(file), f"cannot be read as Parquet ({' '.join(str(error).split())})") from None
    if first is not None:
        more = f" ({bad_rows - 1} more bad row(s))" if bad_rows > 1 else ""
        raise RecordError(first.record_where, first.field, first.what + more,
                          fix=f"`uftdata inspect {file}` lists every problem; fix the rows, or rebuild the file.")
    pair_rows = pl.concat(pairs)
    broken = schema.pair_problems(pair_rows)
    if broken.height:
        pair_id, problem = (str(value) for value in broken.row(0))  # both String columns
        row = pair_rows.filter(pl.col("pair_id") == pair_id).select(pl.col("row").min()).item()
        raise RecordError(f"{file}: row {row}", "pair_id", f"{pair_id} {problem}",
                          fix=f"`uftdata inspect {file}` lists every problem; fix the rows, or rebuild the file.")


def _parquet(file: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as error:
        raise UftDataError(str(file), f"cannot be read as Parquet ({' '.join(str(error).split())})") from None


def _read_files(files: Sequence[Path]) -> pl.DataFrame:
    """The rows of `files`, in order, each file in the row schema and its targets valid."""
    frames = []
    for file in files:
        problems = schema.schema_problems(_parquet(file).schema_arrow)
        if problems:
            raise UftDataError(str(file), "is not in the row schema", got="; ".join(problems),
                               expected="the columns of uftdata/schema.py", fix="Write it with a uftdata command.")
        frame = pl.read_parquet(file, columns=list(COLUMNS))
        _check_targets(file, frame)
        frames.append(frame)
    return pl.concat(frames)


def _check_targets(file: Path, frame: pl.DataFrame) -> None:
    """Every row's target as its kind needs it (`schema.target_problems`: score in [0, 1] and 1 on
    sft rows, UFT Eq. 7; label set exactly on binary and pairwise rows; pair_id on pairwise rows),
    or an error naming the file, the first bad row (0-based in the file) with its id, and the field.
    A plain file was checked row by row already; a mixture's rows are checked here."""
    bad = schema.target_problems(frame)
    if bad.height:
        row, field, problem = bad.row(0)
        more = bad["row"].n_unique() - 1
        raise RecordError(f"{file}: row {row} (id {frame['id'][row]})", field,
                          problem + (f" ({more} more bad row(s))" if more else ""),
                          fix="Rebuild the mixture with today's `uftdata mix`, which refuses such rows, or fix the rows.")


def check_kinds(rows: pl.DataFrame, allowed_kinds: Collection[str], keep: Collection[str] | None,
                *, loss: str = "the loss") -> tuple[pl.DataFrame, Counter[str]]:
    """`rows` limited to `keep` (`data.kinds`; None keeps all) and the rows removed, by kind.

    Any remaining kind outside `allowed_kinds` is a load-time error that lists the counts by kind.
    """
    if keep is not None:
        unknown = sorted(set(keep) - set(schema.KINDS))
        if unknown:
            raise UftDataError("data.kinds", "has unknown kinds", got=unknown, expected=f"a subset of {list(schema.KINDS)}")
    counts = Counter(dict(rows.group_by("kind").len().iter_rows()))
    removed = Counter({k: n for k, n in counts.items() if keep is not None and k not in keep})
    if removed:
        rows = rows.filter(pl.col("kind").is_in(list(keep or ())))
    refused = sorted(k for k in counts if k not in removed and k not in allowed_kinds)
    if refused:
        by_kind = ", ".join(f"{k}: {counts[k]}" for k in sorted(counts))
        allowed = sorted(allowed_kinds)
        raise UftDataError(
            "data", f"has rows of kinds {loss} does not train on ({', '.join(refused)})", got=by_kind,
            expected=f"only {', '.join(allowed)}",
            fix=f"Set data.kinds: [{', '.join(k for k in allowed if k in counts)}] to train on the rest, or choose another loss.",
        )
    return rows, removed


def render(tokenizer: PreTrainedTokenizerBase, prompt: list[dict], completion: list[dict],
           template: str | None) -> tuple[str, str]:
    """(rendered prompt with the generation prompt, rendered prompt + completion).

    `template` (the recipe's `model.template`) replaces the tokenizer's chat template; it is only a
    string, so it cannot add tokens to the vocabulary. The completion's text is the whole's rest
    after the prompt (`split_render`).
    """
    prompt_text = tokenizer.apply_chat_template(prompt, chat_template=template, tokenize=False,
                                                add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, chat_template=template, tokenize=False)
    assert isinstance(prompt_text, str) and isinstance(full_text, str)  # tokenize=False renders text
    return prompt_text, full_text


def tokenize_split(rows: pl.DataFrame, tokenizer: PreTrainedTokenizerBase, *, template: str | None, max_length: int,
                   max_prompt_length: int, truncation: Truncation = "drop") -> tuple[list[Example], Counter[str]]:
    """Examples for the rows that fit, and the count of the others by reason (plus `prompt_truncated`).

    A row's tokens are the rendered prompt's (with the generation prompt) followed by the rendered
    completion's, each tokenized on its own (`add_special_tokens=False`), as mistral-common, TRL and
    the authors do: the prompt's tokens are exactly those the model is given at generation, whatever
    the tokenizer merges across the boundary (with SentencePiece, the completion's first piece
    carries the "▁" its dummy prefix adds, as in mistral-common's encoding).

    `drop` (default, the authors' rule): a row whose prompt is over `max_prompt_length` or whose
    whole is over `max_length` tokens is dropped (`too_long`) with its pair partner
    (`partner_dropped`). `truncate_prompt_left` instead removes leading prompt tokens to fit both
    limits; a row is still dropped when its completion leaves no room for one prompt token.
    Completions are never truncated.
    """
    if truncation not in TRUNCATIONS:
        raise UftDataError("data.truncation", "is not a known mode", got=truncation, expected=" or ".join(TRUNCATIONS))
    counts: Counter[str] = Counter()
    kept: list[tuple[int, tuple[int, ...], int, bool]] = []  # (row, input_ids, prompt_len, truncated)
    for start in range(0, rows.height, CHUNK_ROWS):
        chunk = rows.slice(start, CHUNK_ROWS)
        prompts, completions = _render_chunk(chunk, tokenizer, template, start)
        encoded = tokenizer(prompts + completions, add_special_tokens=False)["input_ids"]  # one batch call
        for i, (prompt_ids, completion_ids) in enumerate(zip(encoded[:len(prompts)], encoded[len(prompts):])):
            fitted = _fit(prompt_ids, completion_ids, max_length=max_length, max_prompt_length=max_prompt_length,
                          truncation=truncation)
            if isinstance(fitted, str):
                counts[fitted] += 1
            else:
                kept.append((start + i, *fitted))
    kept = _drop_broken_pairs(rows, kept, counts)
    counts[PROMPT_TRUNCATED] += sum(truncated for *_, truncated in kept)
    columns = ("score", "kind", "label", "pair_id", "group", "id", "source")
    score, kind, label, pair_id, group, row_id, source = (rows[c].to_list() for c in columns)
    examples = [Example(row, kind[row], float(score[row]), label[row], pair_id[row], group[row], ids, prompt_len,
                        row_id[row], source[row])
                for row, ids, prompt_len, _ in kept]
    return examples, +counts  # unary plus drops zero counts


def _render_chunk(chunk: pl.DataFrame, tokenizer: PreTrainedTokenizerBase, template: str | None,
                  start: int) -> tuple[list[str], list[str]]:
    """(rendered prompts, rendered completions) of the chunk's rows."""
    prompts, completions = [], []
    for i, (row_id, prompt, completion) in enumerate(chunk.select("id", "prompt", "completion").iter_rows()):
        where = f"row {start + i} (id {row_id})"
        try:
            prompt_text, whole_text = render(tokenizer, prompt, completion, template)
        except jinja2.TemplateError as error:
            raise UftDataError("model.template", f"cannot render {where}", got=str(error),
                               fix="Fix the Jinja template in the recipe.") from None
        prompts.append(prompt_text)
        completions.append(split_render(prompt_text, whole_text, where))
    return prompts, completions


def split_render(prompt_text: str, whole_text: str, where: str) -> str:
    """The rendered completion: the whole's text after the rendered prompt.

    A template whose prompt (with the generation prompt) is not a string prefix of the whole renders
    the conversation differently once the answer follows, so the model would train on a prompt it
    never meets at generation. That is the template's defect, not the row's (the same template does
    it to every row of that shape), so it is an error naming the first row, not a silent drop."""
    if whole_text.startswith(prompt_text):
        return whole_text[len(prompt_text):]
    at = next((i for i, (a, b) in enumerate(zip(prompt_text, whole_text)) if a != b), len(whole_text))
    raise UftDataError("model.template", f"renders {where}'s prompt differently when the completion follows: "
                       "the prompt with the generation prompt is not a prefix of prompt + completion",
                       got=f"prompt ...{prompt_text[max(0, at - 30):at + 30]!r}, whole ...{whole_text[max(0, at - 30):at + 30]!r}",
                       fix="Make add_generation_prompt render exactly the start of the next assistant message.")


def _fit(prompt_ids: list[int], completion_ids: list[int], *, max_length: int, max_prompt_length: int,
         truncation: Truncation) -> tuple[tuple[int, ...], int, bool] | str:
    """(input_ids, prompt_len, truncated) for a row that fits, else the reason it is dropped."""
    prompt_len, completion_len = len(prompt_ids), len(completion_ids)
    ids = prompt_ids + completion_ids
    if prompt_len == 0:
        return "empty_prompt"  # the first completion token would have nothing to be predicted from
    if completion_len == 0:
        return "empty_completion"
    if prompt_len <= max_prompt_length and len(ids) <= max_length:
        return tuple(ids), prompt_len, False
    budget = min(max_prompt_length, max_length - completion_len)
    if truncation == "drop" or budget < 1:
        return "too_long"
    return tuple(ids[prompt_len - budget:]), budget, True


def _drop_broken_pairs(rows: pl.DataFrame, kept: list, counts: Counter[str]) -> list:
    """`kept` without pairs that lost a row (`partner_dropped`) or never had two (`pair_incomplete`)."""
    pair_ids = rows["pair_id"].to_list()
    labels = rows["label"].to_list()
    members: dict[str, list[int]] = {}
    for row, pair_id in enumerate(pair_ids):
        if pair_id is not None:
            members.setdefault(pair_id, []).append(row)
    survivors = {row for row, *_ in kept}
    bad: set[int] = set()
    for group in members.values():
        if len(group) != 2 or {labels[r] for r in group} != {True, False}:
            counts["pair_incomplete"] += sum(r in survivors for r in group)
            bad.update(group)
        elif not all(r in survivors for r in group):
            counts["partner_dropped"] += sum(r in survivors for r in group)
            bad.update(group)
    return [k for k in kept if k[0] not in bad]
