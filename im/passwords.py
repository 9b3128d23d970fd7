"""Password hashes: salted scrypt (memory-hard), computed in gevent's threadpool.

The KDF takes tens of milliseconds of CPU; running it in the hub's threadpool (scrypt releases
the GIL) keeps the event loop serving other connections during a login storm.
"""

import base64
import hashlib
import hmac
import os

import gevent

R, P, DKLEN = 8, 1, 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, log_n: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log_n, r=R, p=P,
                          maxmem=256 * 1024 * 1024, dklen=DKLEN)


def _in_pool(fn, *args):
    return gevent.get_hub().threadpool.apply(fn, args)


def hash_password(password: str, log_n: int = 14) -> str:
    salt = os.urandom(16)
    digest = _in_pool(_scrypt, password, salt, log_n)
    return f"scrypt${log_n}${_b64(salt)}${_b64(digest)}"


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
