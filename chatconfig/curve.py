"""CURVE keys for the broker path: `chat-keys`, and the helpers every socket uses.

Shared by the broker (server side) and the edges and publishers (client side),
so no process imports another process's package for it.

The broker is a CURVE server with its own keypair; each edge (or any other
publisher) is a CURVE client with its own keypair and the broker's public
key. The broker's ZAP handler accepts only client public keys found in a
directory of allowed `.key` files, so a process without an allowed key can
neither publish nor subscribe. Key files are the ZeroMQ certificate format
(`NAME.key` public, `NAME.key_secret` public + secret) that
`zmq.auth.create_certificates` writes.

    chat-keys --dir keys broker edge-a edge-b
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

ZAP_DOMAIN = "roomcast"


class CurveKeyError(Exception):
    """A key file is missing, unreadable or lacks the key it should hold."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes
    secret: bytes


def load_keypair(path: str | os.PathLike[str]) -> KeyPair:
    """A `.key_secret` file: this process's own public and secret key."""
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read CURVE key file {os.fspath(path)!r}: {exc}") from None
    if not secret:
        raise CurveKeyError(f"{os.fspath(path)!r} holds no secret key: give the .key_secret file")
    return KeyPair(public, secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """A `.key` (or `.key_secret`) file: a peer's public key."""
    try:
        public, _ = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read CURVE key file {os.fspath(path)!r}: {exc}") from None
    return public


def apply_client(sock: zmq.Socket[Any], own: KeyPair, server_public: bytes) -> None:
    """Make `sock` a CURVE client of the broker; call before `connect`."""
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)


def apply_server(sock: zmq.Socket[Any], own: KeyPair) -> None:
    """Make `sock` a CURVE server whose clients ZAP checks; call before `bind`."""
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)


def client_keys(secret_file: str, broker_key_file: str) -> tuple[KeyPair, bytes] | None:
    """Settings -> (own keypair, broker's public key), or None when CURVE is off."""
    if not secret_file and not broker_key_file:
        return None
    if not secret_file or not broker_key_file:
        raise CurveKeyError("CURVE needs both --curve-secret-key and --curve-broker-key")
    return load_keypair(secret_file), load_public_key(broker_key_file)


def allowed_keys(directory: str | os.PathLike[str]) -> int:
    """How many public keys `directory` allows; it must exist (never "allow any")."""
    if not Path(directory).is_dir():
        raise CurveKeyError(f"--curve-allowed {os.fspath(directory)!r} is not a directory")
    return len(zmq.auth.load_certificates(os.fspath(directory)))


def start_authenticator(ctx: zmq.Context[Any], directory: str) -> ThreadAuthenticator:
    """The ZAP handler for `ctx`: only public keys in `directory` may connect.

    Start it before binding; keys added to or removed from `directory` take
    effect when the broker restarts.
    """
    allowed_keys(directory)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain=ZAP_DOMAIN, location=os.fspath(directory))
    return auth


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address: not reachable off-host."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = rest.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def generate(directory: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write `NAME.key` and `NAME.key_secret` (mode 0600) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise FileExistsError(f"{secret} or {public} exists (use --force to replace)")
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(os.fspath(directory), name)
    finally:
        os.umask(old_umask)
    secret.chmod(0o600)
    public.chmod(0o644)
    return public, secret


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chat-keys",
        description=(
            "Generate CURVE keypairs for the broker and its edges: NAME.key (public, "
            "give it to peers) and NAME.key_secret (keep it on the host that uses it)."
        ),
    )
    parser.add_argument("names", nargs="+", help="one keypair per name, e.g. broker edge-a")
    parser.add_argument("--dir", default=".", help="directory to write the key files to")
    parser.add_argument(
        "--allow",
        metavar="DIR",
        help="also copy the public keys of every name but `broker` into DIR "
        "(the broker's --curve-allowed directory)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing key files")
    args = parser.parse_args(argv)
    out = Path(args.dir)
    for name in args.names:
        if not name or "/" in name or name.startswith("."):
            parser.error(f"bad key name {name!r}")
        try:
            public, secret = generate(out, name, args.force)
        except FileExistsError as exc:
            print(f"chat-keys: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: public {public}  secret {secret}")
        if args.allow and name != "broker":
            allow_dir = Path(args.allow)
            allow_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(public, allow_dir / public.name)
            print(f"{name}: allowed in {allow_dir / public.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
