"""A small, fast parser for ``multipart/form-data`` bodies already read into memory.

The gateway receives whole bodies (they are capped at 32 MiB anyway), so a parser over
the raw bytes is both simpler and several times cheaper than a streaming one: for the
small forms of a benchmark it costs a few microseconds, which matters when the server
must stay well under a millisecond of CPU per request. The same parser serves the
aiohttp server and the in-process transport, so both see exactly the same form.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FormPart", "MultipartError", "boundary_from_content_type", "parse_multipart"]

_CRLF = b"\r\n"
_HEADER_END = b"\r\n\r\n"
# RFC 2046 caps a boundary at 70 characters; a longer one is a malformed header, and
# rejecting it keeps the search below from being fed something absurd.
_MAX_BOUNDARY = 70
# Far more parts than any real transcription form; a bound keeps a hostile body cheap.
_MAX_PARTS = 1000


class MultipartError(ValueError):
    """A body that is not valid ``multipart/form-data``; the message says why.

    Examples
    --------
    >>> try:
    ...     parse_multipart(b"garbage", "b")
    ... except MultipartError as err:
    ...     print(err)
    multipart body does not start with its boundary
    """


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a form: a field (``filename is None``) or a file.

    Parameters
    ----------
    name : str
        The ``name`` parameter of its ``Content-Disposition``.
    data : bytes
        The raw content.
    filename : str or None
        The ``filename`` parameter, when the part is a file upload (may be ``""``).
    content_type : str or None
        Its ``Content-Type`` header, when given.

    Examples
    --------
    >>> part = FormPart("model", b"local/fake")
    >>> part.is_file, part.text()
    (False, 'local/fake')
    """

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        """Whether this part is an upload rather than a text field.

        A filename makes it a file; so does a non-text ``Content-Type``, because some
        clients send raw audio parts with a content type but no filename. JSON counts as
        text: OpenAPI 3.0 generators send an object property such as ``provider`` as a
        part of type ``application/json``.
        """
        if self.filename is not None:
            return True
        ctype = self.content_type
        if ctype is None:
            return False
        media_type = ctype.partition(";")[0].strip().lower()
        return not (
            media_type.startswith("text/")
            or media_type == "application/json"
            or media_type.endswith("+json")
        )

    def text(self) -> str:
        """The content decoded as UTF-8.

        Raises
        ------
        MultipartError
            If the content is not valid UTF-8.
        """
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MultipartError(f"form field {self.name!r} is not valid UTF-8") from err


def boundary_from_content_type(content_type: str) -> str:
    """Return the ``boundary`` parameter of a ``multipart/form-data`` content type.

    Parameters
    ----------
    content_type : str
        The full ``Content-Type`` header value.

    Returns
    -------
    str

    Raises
    ------
    MultipartError
        If the parameter is missing, empty or too long.

    Examples
    --------
    >>> boundary_from_content_type('multipart/form-data; boundary="abc def"')
    'abc def'
    """
    for param in content_type.split(";")[1:]:
        key, sep, value = param.strip().partition("=")
        if sep and key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value or len(value) > _MAX_BOUNDARY:
                raise MultipartError("multipart boundary is empty or longer than 70 characters")
            return value
    raise MultipartError("multipart/form-data content type has no boundary")


def parse_multipart(body: bytes, boundary: str) -> list[FormPart]:
    """Split a ``multipart/form-data`` body into its parts, in order.

    Parameters
    ----------
    body : bytes
        The whole request body.
    boundary : str
        The boundary from the content type (see :func:`boundary_from_content_type`).

    Returns
    -------
    list of FormPart

    Raises
    ------
    MultipartError
        If the body is malformed: no opening or closing boundary, a part without a
        ``Content-Disposition: form-data; name=...`` header, too many parts.

    Examples
    --------
    >>> body = (
    ...     b"--xyz\\r\\n"
    ...     b'Content-Disposition: form-data; name="model"\\r\\n\\r\\n'
    ...     b"local/fake\\r\\n"
    ...     b"--xyz--\\r\\n"
    ... )
    >>> parse_multipart(body, "xyz")
    [FormPart(name='model', data=b'local/fake', filename=None, content_type=None)]
    """
    delimiter = b"--" + boundary.encode("latin-1")
    # Every part after the first starts with CRLF + delimiter; searching for that exact
    # sequence means a boundary-like string inside file content cannot split a part
    # unless it sits at a line start, which is what the RFC promises never happens.
    separator = _CRLF + delimiter
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        # A preamble before the first boundary is legal (and ignored).
        start = body.find(separator)
        if start < 0:
            raise MultipartError("multipart body does not start with its boundary")
        pos = start + len(separator)
    parts: list[FormPart] = []
    while True:
        if body.startswith(b"--", pos):
            return parts
        # Transport padding (spaces/tabs) may follow a boundary before its CRLF.
        line_end = body.find(_CRLF, pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise MultipartError("malformed multipart boundary line")
        header_start = line_end + 2
        if body.startswith(_CRLF, header_start):
            # A blank line right after the boundary: a part without any headers.
            raise MultipartError("multipart part has no Content-Disposition header")
        header_end = body.find(_HEADER_END, header_start)
        if header_end < 0:
            raise MultipartError("multipart part has no end of headers")
        data_start = header_end + 4
        data_end = body.find(separator, data_start)
        if data_end < 0:
            raise MultipartError("multipart body has no closing boundary")
        parts.append(_make_part(body[header_start:header_end], body[data_start:data_end]))
        if len(parts) > _MAX_PARTS:
            raise MultipartError(f"multipart body has more than {_MAX_PARTS} parts")
        pos = data_end + len(separator)


def _make_part(raw_headers: bytes, data: bytes) -> FormPart:
    """Build a part from its raw header block and content."""
    disposition: str | None = None
    content_type: str | None = None
    # Header values are ASCII in practice; UTF-8 covers the filenames that browsers and
    # httpx send raw, and surrogateescape keeps anything else from raising here.
    for line in raw_headers.decode("utf-8", "surrogateescape").split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "content-disposition":
            disposition = value.strip()
        elif key == "content-type":
            content_type = value.strip() or None
    if disposition is None:
        raise MultipartError("multipart part has no Content-Disposition header")
    kind, params = _parse_disposition(disposition)
    if kind != "form-data":
        raise MultipartError(f"multipart part disposition is {kind!r}, not 'form-data'")
    name = params.get("name")
    if name is None:
        raise MultipartError("multipart part has no name")
    # RFC 7578 says filename* should not be used, but some clients send it for non-ASCII.
    extended = params.get("filename*")
    filename = _decode_ext_value(extended) if extended is not None else params.get("filename")
    return FormPart(name, data, filename, content_type)


def _parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    """Split ``form-data; name="a"; filename="b"`` into its type and parameters.

    Quoted values may contain ``;`` and backslash-escaped quotes, so this is a small
    scanner rather than a ``split(";")``.
    """
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(chars)
        else:
            end = rest.find(";", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return kind.strip().lower(), params


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 5987 ``charset'lang'percent-encoded`` parameter value."""
    from urllib.parse import unquote

    charset, sep, rest = value.partition("'")
    if not sep:
        return value
    _, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError) as err:
        raise MultipartError(f"undecodable filename* parameter: {value!r}") from err
