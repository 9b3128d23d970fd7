"""Receiving request bodies into buffers: reused ones (a fresh megabyte-sized buffer costs its
page faults on every request, ~0.3 ms per MiB here, a reused one only once), filled from a
stream that may stop early."""

from im.errors import bad_request


class BufferPool:
    """Up to `count` buffers of `size` bytes, made on demand and kept when given back."""

    def __init__(self, size: int, count: int):
        self.size = size
        self.count = count
        self._free: list[memoryview] = []
        self._made = 0

    def take(self, length: int) -> memoryview | None:
        """A buffer of at least `length` bytes, or None when `length` is too large or every
        buffer is taken."""
        if length > self.size:
            return None
        if self._free:
            return self._free.pop()
        if self._made < self.count:
            self._made += 1
            return memoryview(bytearray(self.size))
        return None

    def give(self, buf: memoryview) -> None:
        self._free.append(buf)


def read_some(stream, into: memoryview, done: int, length: int) -> int:
    """Bytes read into `into` (at least one) of a body of `length` of which `done` arrived; a
    body that ends first is a bad request."""
    got = stream.readinto(into)
    if not got:
        raise bad_request("body", f"ended after {done} of {length} bytes")
    return got


def read_exactly(stream, view: memoryview) -> None:
    """Fill `view` from `stream`."""
    done = 0
    while done < len(view):
        done += read_some(stream, view[done:], done, len(view))
