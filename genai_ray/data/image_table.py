"""Parquet tables of encoded images: which column holds the images, which the labels, and the class names.

Hugging Face ``datasets`` exports an image column as a struct ``{bytes: binary, path: string}``; other tools
write plain binary columns. Labels are integers (class indices) or strings (class names, sorted here).
Everything here reads schemas and the label column only, never the images.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from genai_ray.errors import UserError

LABEL_NAMES = ("label", "labels", "class", "category", "target")  # tried in order when --label-column is not given


def column_kind(t: pa.DataType) -> str | None:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        inner = t.field("bytes").type
        return "struct" if pa.types.is_binary(inner) or pa.types.is_large_binary(inner) else None
    return None


def pick_image_column(uri: str, schema: pa.Schema, given: str | None) -> str:
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)
    candidates = [f.name for f in schema if column_kind(f.type)]
    if given is not None:
        if given not in schema.names or given not in candidates:
            raise UserError(f"{uri}: --image-column {given!r} is not a column of encoded images (binary, or a "
                            f"{{bytes, path}} struct); its columns: {columns}")
        return given
    if len(candidates) == 1:
        return candidates[0]
    if "image" in candidates:
        return "image"
    if candidates:
        raise UserError(f"{uri}: several columns could hold images ({', '.join(candidates)}); pass --image-column")
    raise UserError(f"{uri}: no column of encoded images (binary, or a {{bytes, path}} struct as Hugging Face "
                    f"exports them); its columns: {columns}")


def pick_label_column(uri: str, schema: pa.Schema, given: str | None) -> str | None:
    usable = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_string(f.type)
              or pa.types.is_large_string(f.type)]
    if given is not None:
        if given not in usable:
            found = f"is {schema.field(given).type}" if given in schema.names else "does not exist"
            raise UserError(f"{uri}: --label-column {given!r} {found}; it must be an integer or string column "
                            f"(usable: {', '.join(usable) or 'none'})")
        return given
    return next((n for n in LABEL_NAMES if n in usable), None)


def scan_labels(uri: str, fs: pafs.FileSystem, tables: list[str], column: str) -> list[str]:
    """Class names from one streamed pass over the label column: sorted strings, or 0..max for integers."""
    values: set = set()
    nulls = 0
    for path in tables:
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=[column], batch_size=65536):
                col = batch.column(0)
                nulls += col.null_count
                values.update(col.unique().drop_null().to_pylist())
    if nulls:
        raise UserError(f"{uri}: label column {column!r} has {nulls} empty (null) values; fill them or drop those "
                        "rows, or pass --label-column for another column")
    if all(isinstance(v, int) for v in values):
        if values and min(values) < 0:
            raise UserError(f"{uri}: label column {column!r} holds {min(values)}; labels must be class indices >= 0 "
                            "or class names")
        return [str(i) for i in range(max(values, default=-1) + 1)]
    return sorted(str(v) for v in values)
