"""The fields of a `multipart/form-data` body read whole: the file server's upload form.

An upload form is a few small fields and one base64 `bin` of up to ~11 MB. werkzeug's streaming
parser looks for the boundary in 64 KiB pieces and gathers a field's pieces in Python: half of
a form upload's server CPU (issue 7). A body of a known length, already bounded by the caller,
is received here into one buffer and split with `find`. Anything this reader is not sure about
(a preamble not ending in CRLF, transport padding, a part without a name, no closing
delimiter) is handed to werkzeug's parser, as bytes.

A file part counts as a field of its name, as text, unless a plain field has that name: a
client that sends its base64 `bin` as a file (`curl -F bin=@chunk.b64`) uploads the chunk
instead of being answered as a probe and sending it again forever.
"""

import io

from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from im.buffers import BufferPool, read_exactly
from im.errors import ImError, bad_request

BUFFERS = BufferPool(2 * 1024 * 1024, 4)  # the form of a 1 MiB chunk is ~1.4 MB
MAX_PARTS = 1000  # as werkzeug: a body of tiny parts would cost a loop turn and a key each

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"


def read_fields(stream, length: int, mimetype: str, options: dict) -> dict[str, str]:
    """The fields of a form body of `length` bytes (multipart or not) read from `stream`."""
    pooled = BUFFERS.take(length)
    body = pooled.obj if pooled is not None else bytearray(length)
    try:
        read_exactly(stream, memoryview(body)[:length])
        fields = None
        if mimetype == "multipart/form-data":
            fields = text_fields(body, length, options.get("boundary", ""))
        if fields is None:
            fields = _werkzeug_fields(bytes(body[:length]), mimetype, options)
    finally:
        if pooled is not None:
            BUFFERS.give(pooled)
    return fields


def _werkzeug_fields(body: bytes, mimetype: str, options: dict) -> dict[str, str]:
    parser = FormDataParser(max_form_memory_size=len(body), silent=False)
    try:
        _, form, files = parser.parse(io.BytesIO(body), mimetype, len(body), options)
    except ValueError as err:  # werkzeug's silent default made a broken form an empty one
        raise bad_request("body", f"not a readable form ({err})") from None
    as_text = {name: part.read().decode("utf-8", "replace") for name, part in files.items()}
    return {**as_text, **form.to_dict()}


def text_fields(body: bytearray, length: int, boundary: str) -> dict[str, str] | None:
    """Each named part's value in the first `length` bytes of `body` (UTF-8, like werkzeug;
    the first of a repeated name; a plain field before a file part); None if they are not a
    multipart body this reader understands."""
    if not boundary:
        return None
    dash = b"--" + boundary.encode("latin-1")
    at = body.find(dash, 0, length)
    if at < 0 or (at and body[at - 2:at] != CRLF):
        return None
    separator = CRLF + dash
    at += len(dash)
    fields: dict[str, str] = {}
    files: dict[str, str] = {}
    view = memoryview(body)
    parts = 0
    while not body.startswith(b"--", at, length):  # the closing delimiter
        if not body.startswith(CRLF, at, length):
            return None
        parts += 1
        if parts > MAX_PARTS:
            raise ImError("too_large", f"body: more than {MAX_PARTS} form parts", 413)
        head_end = body.find(HEAD_END, at, length)
        end = body.find(separator, head_end + 4, length) if head_end >= 0 else -1
        if end < 0:
            return None
        part = _form_part(body[at + 2:head_end])
        if part is None:
            return None
        name, is_file = part
        (files if is_file else fields).setdefault(name, str(view[head_end + 4:end], "utf-8", "replace"))
        at = end + len(separator)
    return {**files, **fields}


def _form_part(head: bytearray) -> tuple[str, bool] | None:
    """(name, whether it is a file) from a part's headers; None without a form-data name."""
    for line in head.split(CRLF):
        key, colon, value = line.decode("utf-8", "replace").partition(":")
        if colon and key.strip().lower() == "content-disposition":
            kind, options = parse_options_header(value.strip())
            if kind != "form-data" or not options.get("name"):
                return None
            return options["name"], "filename" in options
    return None
