"""How a settings class becomes command-line flags, environment variables and checks.

A settings class is a frozen dataclass deriving from `Settings`. Each field
made with `setting` is one flag: `max_rooms` is `--max-rooms`, and its
environment fallback is `CHAT_` plus the flag in upper case
(`CHAT_MAX_ROOMS`). A field whose type is itself a settings class
(`field(default_factory=Slice)`) is a slice: its fields become flags of the
same command, so a slice is defined once and shared by every command that
needs it. Flag names are
unique across a command, whatever the nesting.

Values are checked when the object is built, from flags or in code: each
field's `Check`s, then the class's `check` for rules across its fields. A
failure raises `SettingError`, whose message names the flag and its variable;
`parse` reports it the way argparse reports a bad flag (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

ENV_PREFIX = "CHAT_"

S = TypeVar("S", bound="Settings")


class SettingError(ValueError):
    """A setting outside its allowed range; the message names its flag and variable."""


@dataclass(frozen=True, slots=True)
class Check:
    """One rule a setting's value must follow; `text` completes "must be ..."."""

    text: str
    ok: Callable[[Any], bool]
    show_value: bool = True


def setting(
    default: Any,
    help: str,
    *checks: Check,
    aliases: Sequence[str] = (),
    operand: str = "",
    repeat: bool = False,
    secret: bool = False,
) -> Any:
    """A field that is a flag with a `CHAT_*` fallback.

    `aliases`: other spellings of the flag (the variable follows the field's name).
    `operand`: a positional argument shown as this metavar, without a variable.
    `repeat`: a tuple flag given once per item (the variable is comma-separated).
    `secret`: never shown in repr, error messages or help defaults.
    """
    return field(
        default=default,
        repr=not secret,
        metadata={
            "help": help,
            "checks": checks,
            "aliases": tuple(aliases),
            "operand": operand,
            "repeat": repeat,
            "secret": secret,
        },
    )


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def label(f: dataclasses.Field[Any]) -> str:
    """How an error message names a setting: `--flag (CHAT_FLAG)`, or an operand's metavar."""
    if f.metadata.get("operand"):
        return str(f.metadata["operand"])
    return f"{flag_name(f.name)} ({env_name(f.name)})"


class Settings:
    """Base of every settings class: checks run when an object is built."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(typing.cast(Any, self)):
            value = getattr(self, f.name)
            if value is None:
                continue
            for check in f.metadata.get("checks", ()):
                if not check.ok(value):
                    shown = check.show_value and not f.metadata.get("secret")
                    got = f", got {value!r}" if shown else ""
                    raise SettingError(f"{label(f)} must be {check.text}{got}")
        self.check()

    def check(self) -> None:
        """Rules across this slice's fields; raise `SettingError` (see `fail`)."""

    def label(self, name: str) -> str:
        return label(_field(type(self), name))


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(name)


# Checks.


def above(low: float) -> Check:
    return Check(f"greater than {low:g}", lambda v: v > low)


def at_least(low: float) -> Check:
    return Check(f"at least {low:g}", lambda v: v >= low)


def between(low: int, high: int) -> Check:
    return Check(f"from {low} to {high}", lambda v: low <= v <= high)


def one_of(*choices: str) -> Check:
    allowed = frozenset(c.upper() for c in choices)
    return Check("one of " + ", ".join(choices), lambda v: str(v).upper() in allowed)


REQUIRED = Check("given", bool, show_value=False)
NOT_EMPTY = Check("non-empty", bool)

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TOKENS = Check(
    "tokens (RFC 9110: letters, digits and !#$%&'*+-.^_`|~), each listed once",
    lambda v: all(_TOKEN.fullmatch(t) for t in v) and len(set(v)) == len(v),
)

_TRANSPORTS = ("tcp", "ipc", "inproc", "pgm", "epgm", "norm", "ws", "wss", "vmci", "udp")
_PORTED = ("tcp", "pgm", "epgm", "norm", "ws", "wss", "udp")
# A Unix socket's path fills sockaddr_un.sun_path: 108 bytes on Linux, with its NUL.
IPC_PATH_MAX = 107


def is_endpoint(value: str) -> bool:
    transport, sep, address = value.partition("://")
    if not sep or transport not in _TRANSPORTS or not address:
        return False
    if transport == "ipc":
        return len(address.encode()) <= IPC_PATH_MAX
    if transport not in _PORTED:
        return True
    host, colon, port = address.partition("/")[0].rpartition(":")
    if not colon or not host:
        return False
    return port == "*" or (port.isdigit() and 1 <= int(port) <= 65535)


ENDPOINT = Check(
    "a ZeroMQ endpoint such as tcp://HOST:PORT (PORT 1 to 65535 or *), ipc://PATH "
    f"(PATH at most {IPC_PATH_MAX} bytes) or inproc://NAME",
    is_endpoint,
)


def comma_list(raw: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c")."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


WS_URLS = Check(
    "comma-separated ws:// or wss:// URLs",
    lambda v: all(u.startswith(("ws://", "wss://")) for u in comma_list(v)),
)


# From flags and variables to a settings object.


@dataclass(frozen=True, slots=True)
class _Leaf:
    field: dataclasses.Field[Any]
    kind: type  # str, int, float, bool or tuple (of str)


def _kind(hint: Any) -> type:
    """The type a flag's value is read as; `X | None` is read as X (None: not given)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return tuple
    if hint in (str, int, float, bool):
        return typing.cast(type, hint)
    raise TypeError(f"unsupported setting type {hint!r}")


def _is_slice(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Settings)


def walk(cls: type[Settings]) -> Iterator[tuple[type[Settings], _Leaf]]:
    """Every leaf setting of `cls`, slices flattened, with the class that holds it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(typing.cast(Any, cls)):
        hint = hints[f.name]
        if _is_slice(hint):
            yield from walk(hint)
        else:
            yield cls, _Leaf(f, _kind(hint))


def fields_of(cls: type[Settings]) -> list[dataclasses.Field[Any]]:
    """Every leaf setting of a command, in flag order."""
    return [leaf.field for _, leaf in walk(cls)]


def _cast(leaf: _Leaf, raw: str, source: str) -> Any:
    kind = leaf.kind
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{source}: expected a boolean, got {raw!r}")
    if kind is tuple:
        return comma_list(raw)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{source}: expected {kind.__name__}, got {raw!r}") from None


def _summary(cls: type) -> str | None:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else None


def _add(target: argparse._ActionsContainer, leaf: _Leaf) -> None:
    f, meta = leaf.field, leaf.field.metadata
    rules = "; ".join(c.text for c in meta["checks"] if c is not REQUIRED)
    if meta["operand"]:
        target.add_argument(
            f.name, metavar=meta["operand"], nargs="+" if leaf.kind is tuple else None,
            help=(meta["help"] + (f" [{rules}]" if rules else "")).replace("%", "%%"),
        )
        return
    shown = repr(",".join(f.default) or None) if isinstance(f.default, tuple) else repr(f.default)
    default = "required" if REQUIRED in meta["checks"] else f"default {shown}"
    if meta["secret"] and f.default:
        default = "default set"
    help_text = f"{meta['help']} [env {env_name(f.name)}; {default}" + (
        f"; {rules}]" if rules else "]"
    )
    help_text = help_text.replace("%", "%%")  # argparse formats help with %
    flags = [flag_name(f.name), *meta["aliases"]]
    if leaf.kind is bool:
        target.add_argument(
            *flags, dest=f.name, default=None, help=help_text,
            action=argparse.BooleanOptionalAction,
        )
    elif meta["repeat"]:
        target.add_argument(*flags, dest=f.name, default=None, action="append", help=help_text)
    else:
        def convert(raw: str, leaf: _Leaf = leaf) -> Any:
            try:
                return _cast(leaf, raw, flag_name(leaf.field.name))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None

        target.add_argument(*flags, dest=f.name, default=None, type=convert, help=help_text)


def _build(cls: type[Settings], values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(typing.cast(Any, cls)):
        if _is_slice(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def parser_for(
    cls: type[Settings], prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip() or None,
        epilog=f"Every flag may also be set by an environment variable: {ENV_PREFIX}<FLAG>, "
        "for example --max-rooms by CHAT_MAX_ROOMS. Flags win over variables.",
    )
    groups: dict[type, argparse._ActionsContainer] = {cls: parser}
    seen: set[str] = set()
    for holder, leaf in walk(cls):
        f = leaf.field
        names = {f.name if f.metadata["operand"] else flag_name(f.name), *f.metadata["aliases"]}
        if names & seen:
            raise TypeError(f"{cls.__name__}: setting {leaf.field.name} defined twice")
        seen |= names
        if holder not in groups:
            groups[holder] = parser.add_argument_group(_summary(holder))
        _add(groups[holder], leaf)
    return parser


def parse(
    cls: type[S],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> S:
    """Build `cls` from flags, falling back to `CHAT_*` variables, then defaults.

    A bad value, from a flag or a variable, ends the process the way argparse
    does: usage and the message naming the flag on stderr, exit status 2.
    """
    environ = os.environ if environ is None else environ
    parser = parser_for(cls, prog, description)
    namespace = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for _, leaf in walk(cls):
        f = leaf.field
        given = namespace.get(f.name)
        if given is not None:
            values[f.name] = tuple(given) if leaf.kind is tuple else given
        elif not f.metadata["operand"] and env_name(f.name) in environ:
            try:
                values[f.name] = _cast(leaf, environ[env_name(f.name)], env_name(f.name))
            except ValueError as exc:
                parser.error(str(exc))
    try:
        built: S = _build(cls, values)
    except SettingError as exc:
        parser.error(str(exc))
    return built
