"""Request headers and body for gevent's pywsgi (`im serve`): headers read without the email
package, a body that can be read into the caller's buffer.

pywsgi parses headers with http.client.parse_headers, which runs the email package's feed
parser: ~100 µs per request, a fifth of a QID's server CPU. `FastHandler` reads the same lines
into the small interface pywsgi uses (`status`, `get`, `getheader`, `typeheader`, `headers`,
`del`), and is stricter where leniency lets requests be read two ways: a line without a colon,
whitespace before the colon, obsolete line folding and conflicting Content-Lengths are 400s.
"""

from gevent import pywsgi

MAX_LINE = 65536  # http.client's limits
MAX_HEADERS = 100
END = (b"\r\n", b"\n", b"")
NO_LOG = getattr(pywsgi, "_NoopLog", ())  # what log=None becomes (private: () if it goes away)


class RequestHeaders:
    __slots__ = ("status", "_fields")

    def __init__(self, fp=None):
        self.status = ""  # pywsgi answers 400 when set
        self._fields: list[tuple[str, str, str]] = []  # (lower-case name, name, value)
        if fp is not None:
            self.status = self._read(fp)

    def _read(self, fp) -> str:
        """Read the header lines up to the blank one; returns what is wrong, or ""."""
        while (line := fp.readline(MAX_LINE + 1)) not in END:
            if len(line) > MAX_LINE:
                return "Line too long"
            if len(self._fields) == MAX_HEADERS:
                return "Too many headers"
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip() or line[:1] in b" \t":
                return "Invalid header line"
            self._fields.append((name.lower(), name, value.strip()))
        lengths = {value for key, _, value in self._fields if key == "content-length"}
        return "Conflicting Content-Length" if len(lengths) > 1 else ""

    def get(self, name: str, default=None):
        """The first value of `name` (any case)."""
        key = name.lower()
        for lower, _, value in self._fields:
            if lower == key:
                return value
        return default

    getheader = get

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        self._fields = [field for field in self._fields if field[0] != key]

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")

    @property
    def headers(self):
        """The lines, as pywsgi turns them into HTTP_* environ keys."""
        return [f"{name}: {value}\r\n" for _, name, value in self._fields]


class BodyInput(pywsgi.Input):
    """pywsgi's request body with `readinto`, which werkzeug's stream uses when present: a raw
    file chunk or an upload form is received straight into the caller's buffer (`read`
    allocated a fresh megabyte per call, then werkzeug copied it)."""

    __slots__ = ()

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        if self.chunked_input or self.content_length is None:
            data = self.read(len(view))
            view[:len(data)] = data
            return len(data)
        self._send_100_continue()
        want = min(len(view), self.content_length - self.position)
        got = self.rfile.readinto(view[:want]) if want > 0 else 0
        self.position += got
        return got


class FastHandler(pywsgi.WSGIHandler):
    def MessageClass(self, fp, *args):  # noqa: N802 - pywsgi's name
        return RequestHeaders(fp)

    def get_environ(self) -> dict:
        env = super().get_environ()
        plain = self.wsgi_input
        if env["wsgi.input"] is plain:
            self.wsgi_input = env["wsgi.input"] = BodyInput(
                plain.rfile, plain.content_length, plain.socket, plain.chunked_input)
        return env

    def log_request(self) -> None:
        """pywsgi formats an access-log line per request even when it discards it (log=None)."""
        if not isinstance(self.server.log, NO_LOG):
            super().log_request()
