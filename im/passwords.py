"""Password hashes: salted scrypt (memory-hard), computed in worker threads.

The KDF takes tens of milliseconds of CPU. It runs in a thread pool of its own (scrypt releases
the GIL) whose threads have a lower CPU priority, so that during a login storm the event loop
keeps serving the other connections and the hashing only takes the CPU they leave.
"""

import base64
import hashlib
import hmac
import os
import threading

from gevent.pool import Pool
from gevent.threadpool import ThreadPool

R, P, DKLEN = 8, 1, 32
KDF_THREADS = max(2, os.cpu_count() or 2)
BULK_HASH_THREADS = max(1, KDF_THREADS // 2)  # a bulk import leaves threads free for logins
KDF_NICE = 10

_pool: ThreadPool | None = None
_pool_pid = 0
_thread = threading.local()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, log_n: int) -> bytes:
    if not getattr(_thread, "niced", False):
        _lower_priority()
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log_n, r=R, p=P,
                          maxmem=256 * 1024 * 1024, dklen=DKLEN)


def _lower_priority() -> None:
    """Lower this worker thread's CPU priority (on Linux, nice applies per thread)."""
    _thread.niced = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), KDF_NICE)
    except (AttributeError, OSError):
        pass


def _in_pool(fn, *args):
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():  # one pool per process, also after a fork
        _pool, _pool_pid = ThreadPool(KDF_THREADS), os.getpid()
    return _pool.apply(fn, args)


def hash_password(password: str, log_n: int = 14) -> str:
    salt = os.urandom(16)
    digest = _in_pool(_scrypt, password, salt, log_n)
    return f"scrypt${log_n}${_b64(salt)}${_b64(digest)}"


def hash_passwords(passwords: list[str], log_n: int = 14) -> list[str]:
    """Hash many passwords in parallel worker threads (scrypt releases the GIL)."""
    return Pool(BULK_HASH_THREADS).map(lambda pwd: hash_password(pwd, log_n), passwords)


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, log_n, salt, digest = stored.split("$")
        salt_b, digest_b, n = base64.b64decode(salt), base64.b64decode(digest), int(log_n)
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    return hmac.compare_digest(_in_pool(_scrypt, password, salt_b, n), digest_b)


# verified against when the user does not exist, so both failures cost the same time
DUMMY_HASH = "scrypt$14$AAAAAAAAAAAAAAAAAAAAAA==$" + _b64(bytes(DKLEN))


def dummy_hash(log_n: int) -> str:
    return DUMMY_HASH.replace("$14$", f"${log_n}$", 1)
