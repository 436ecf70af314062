"""What `embalance serve` accepts: pure checks of a request's content type and body, before MLflow parses it.

MLflow's scoring server casts every value to the signature's type before the model sees it: in ``inputs`` and
``instances`` JSON ``null`` becomes the text "None", ``true`` "True" and ``5`` "5", and a CSV's extra field silently
becomes the table's index. So the texts are checked here, on the body as the client sent it, in every format the
scoring server reads:

    application/json                 {"dataframe_split": {"columns": ["text", ...], "data": [["a review", ...], ...]}}
                                     {"dataframe_records": [{"text": "a review", ...}, ...]}
                                     {"inputs": ["a review", ...]}  or  {"inputs": {"text": ["a review", ...]}}
                                     {"instances": ["a review", ...]}  or  [{"text": "a review"}, ...]  or  {"text": [...]}
    text/csv                         a header line with a `text` column, then one row per text (RFC 4180 quoting)
    application/vnd.apache.parquet   a `text` column of type string

Every text must be a non-empty string (the rule and wording of ``embalance.serving.predict.texts_from_input``, the
one copy). A CSV has no types: its fields are all texts, except those pandas (hence MLflow) reads as missing
(an empty field, ``NA``, ``null``, ``None``, ``nan``, ...), which are rejected as missing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from mlflow.exceptions import MlflowException

from embalance.serving.predict import TEXT_COLUMN, texts_from_input

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
MEDIA_TYPES = (JSON, CSV, PARQUET)
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
EXAMPLE = '{"inputs": ["a gorgeous, witty movie"]}'


class RequestError(Exception):
    """A request the server answers with ``status`` and the JSON body ``{"error_code": code, "message": message}``.

    ``close``: also close the connection (the request stream cannot be trusted, e.g. a truncated body).
    """

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST", *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.close = status, message, code, close

    def body(self) -> bytes:
        return json.dumps({"error_code": self.code, "message": self.message}).encode()


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _unsupported(message: str) -> RequestError:
    return RequestError(415, message, "UNSUPPORTED_MEDIA_TYPE")


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, lower-cased: JSON, CSV or Parquet, in UTF-8; else 415."""
    if header is None or not header.strip():
        raise _unsupported(f"The request has no Content-Type; send one of {', '.join(MEDIA_TYPES)}.")
    mime, *parameters = (p.strip() for p in header.split(";"))
    if mime.lower() not in MEDIA_TYPES:
        raise _unsupported(f"The Content-Type must be one of {', '.join(MEDIA_TYPES)}, but got {header!r}.")
    for p in parameters:
        key, _, value = p.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise _unsupported(f"The only Content-Type parameter accepted is charset=utf-8, but got {p!r} in {header!r}.")
    return mime.lower()


def check_body(mime: str, body: bytes) -> int:
    """The number of texts in a valid body of type ``mime``; RequestError (400) naming the first problem otherwise."""
    readers = {JSON: json_texts, CSV: csv_texts, PARQUET: parquet_texts}
    where, values = readers[mime](body)
    return len(_texts(where, values))


def _texts(where: str, values: Sequence[Any]) -> list[str]:
    """``texts_from_input`` (the runtime's rule: non-empty strings) on the values, its error prefixed with ``where``."""
    try:
        return texts_from_input(list(values))
    except MlflowException as e:
        raise RequestError(400, f"In {where}: {e.message}", "INVALID_PARAMETER_VALUE") from None


# ------------------------------------------------------------------------------------------------------- JSON
def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def json_texts(body: bytes) -> tuple[str, list[Any]]:
    """(where, values): the format key and the raw JSON values that the model would read as texts, in order."""
    if not body.strip():
        raise _bad(f"The body is empty; send a JSON object such as {EXAMPLE}.")
    try:
        doc = json.loads(body, parse_constant=_no_constant)  # NaN and Infinity are no JSON: not read as floats
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise _bad(f"The body must be valid JSON in UTF-8, but it is not: {e}.") from None
    except RecursionError:
        raise _bad("The body is JSON nested too deeply to read.") from None
    if not isinstance(doc, dict):
        raise _bad(f"The body must be a JSON object such as {EXAMPLE}, but got a {type(doc).__name__}.")
    keys = [k for k in doc if k in FORMATS]
    others = sorted(set(doc) - set(FORMATS) - {"params"})
    if len(keys) != 1 or others:
        raise _bad(
            f"The body must have exactly one of the fields {', '.join(FORMATS)} (and optionally `params`), "
            f"but its fields are {sorted(doc)}."
        )
    if "params" in doc and not isinstance(doc["params"], dict):
        raise _bad(f"`params` must be a JSON object, but got {type(doc['params']).__name__}: {_preview(doc['params'])}.")
    fmt = keys[0]
    where = f"`{fmt}`"
    extract = {"dataframe_split": _split, "dataframe_records": _records, "inputs": _tensor, "instances": _instances}[fmt]
    return where, extract(doc[fmt], where)


def _split(value: Any, where: str) -> list[Any]:
    if not isinstance(value, dict) or not set(value) <= {"columns", "data", "index"} or "data" not in value:
        raise _bad(f'{where} must be an object {{"columns": [...], "data": [[...], ...]}}, but got {_preview(value)}.')
    columns = value.get("columns")
    if not isinstance(columns, list) or columns.count(TEXT_COLUMN) != 1:
        raise _bad(f"{where} must have `columns` naming one {TEXT_COLUMN!r} column, but got columns={_preview(columns)}.")
    data, col = value["data"], columns.index(TEXT_COLUMN)
    if not isinstance(data, list):
        raise _bad(f"{where}.data must be a list of rows, but got {type(data).__name__}: {_preview(data)}.")
    out = []
    for i, row in enumerate(data):
        if len(columns) == 1 and not isinstance(row, list):
            out.append(row)  # one column: a row may be its bare value, as pandas reads it
        elif not isinstance(row, list) or len(row) != len(columns):
            raise _bad(f"{where}: every row must be a list of {len(columns)} value(s), one per column, but row {i} is {_preview(row)}.")
        else:
            out.append(row[col])
    return out


def _records(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f'{where} must be a list of objects such as {{"{TEXT_COLUMN}": "a review"}}, but got {type(value).__name__}: {_preview(value)}.')
    out = []
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise _bad(f"{where}: every record must be an object with a {TEXT_COLUMN!r} field, but record {i} is {type(record).__name__}: {_preview(record)}.")
        if TEXT_COLUMN not in record:
            raise _bad(f"{where}: every record must have a {TEXT_COLUMN!r} field, but record {i} has the fields {sorted(record)}.")
        out.append(record[TEXT_COLUMN])
    return out


def _columns(value: dict[str, Any], where: str) -> list[Any]:
    if TEXT_COLUMN not in value:
        raise _bad(f"{where} as an object must have a {TEXT_COLUMN!r} field, but its fields are {sorted(value)}.")
    texts = value[TEXT_COLUMN]
    return texts if isinstance(texts, list) else [texts]


def _tensor(value: Any, where: str) -> list[Any]:
    if isinstance(value, dict):
        return _columns(value, where)
    if not isinstance(value, list):
        raise _bad(f'{where} must be a list of strings or an object {{"{TEXT_COLUMN}": [...]}}, but got {type(value).__name__}: {_preview(value)}.')
    return value


def _instances(value: Any, where: str) -> list[Any]:
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return _records(value, where)
    return _tensor(value, where)


# -------------------------------------------------------------------------------------------- CSV and Parquet
def csv_texts(body: bytes) -> tuple[str, list[str]]:
    """(where, values) of a CSV body: each row's `text` field; a row with a different number of fields is rejected."""
    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"The CSV body must be UTF-8, but it is not: {e}.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise _bad(f"The CSV body is empty; send a header line with a {TEXT_COLUMN!r} column, then one row per text.")
        if header.count(TEXT_COLUMN) != 1:
            raise _bad(f"The CSV header must name one {TEXT_COLUMN!r} column, but it is {_preview(header)}.")
        col, values = header.index(TEXT_COLUMN), []
        for row in reader:
            if len(row) != len(header):
                what = "is blank (a missing text)" if not row else f"has {len(row)} fields: {_preview(row)}"
                raise _bad(f"Every CSV row must have the header's {len(header)} field(s), but row {len(values)} (line {reader.line_num}) {what}.")
            values.append(row[col])
    except csv.Error as e:
        raise _bad(f"The CSV body cannot be read: {e} (line {reader.line_num}).") from None
    _texts("the CSV body", values)  # empty and blank texts first: pandas skips whitespace-only lines
    # MLflow reads the body with pandas, which takes some fields for missing values: name them as sent.
    missing = pd.read_csv(io.StringIO(text), dtype=str, usecols=[TEXT_COLUMN])[TEXT_COLUMN].isna().tolist()
    if len(missing) != len(values):
        raise _bad(f"The CSV body reads as {len(values)} rows here but {len(missing)} in pandas; quote the texts (RFC 4180).")
    for i, (value, gone) in enumerate(zip(values, missing, strict=True)):
        if gone:
            raise RequestError(
                400,
                f"In the CSV body: every text must be a string, but text {i} is missing ({value!r}: an empty field, "
                "NA, null, None, nan and the like are read as missing values).",
                "INVALID_PARAMETER_VALUE",
            )
    return "the CSV body", values


def parquet_texts(body: bytes) -> tuple[str, Sequence[Any]]:
    """(where, values) of a Parquet body: its `text` column, which must be of a string type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body))
    except (pa.ArrowException, OSError) as e:
        raise _bad(f"The body is not a readable Parquet file: {str(e).rstrip('.')}.") from None
    if TEXT_COLUMN not in table.column_names:
        raise _bad(f"The Parquet table must have a {TEXT_COLUMN!r} column, but its columns are {table.column_names}.")
    column = table.column(TEXT_COLUMN)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise RequestError(400, f"The Parquet column {TEXT_COLUMN!r} must hold strings, but its type is {column.type}.", "INVALID_PARAMETER_VALUE")
    return "the Parquet body", column.to_pylist()
