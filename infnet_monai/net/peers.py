"""Who the DICOM node talks to: ``AE@host[:port]`` peers, AE titles and UIDs, checked before they are used.

Light on purpose (standard library only): the command line parses ``--allow``, ``--send-to`` and ``--from-pacs``
with these functions before anything heavy is imported, and the spool checks every UID here before it becomes part
of a path.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

__all__ = [
    "MAX_AE_TITLE_CHARS",
    "MAX_UID_CHARS",
    "AllowedCaller",
    "Peer",
    "check_ae_title",
    "check_uid",
    "is_uid",
    "normal_address",
    "parse_peer",
]

MAX_AE_TITLE_CHARS = 16
"""An AE title holds at most 16 characters (DICOM PS3.5, value representation AE)."""
MAX_UID_CHARS = 64
"""A UID holds at most 64 characters (DICOM PS3.5, value representation UI)."""

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
"""Digits in dot-separated components. PS3.5 also forbids leading zeros in a component; some archives store such
UIDs anyway, and they are as safe in a path (only digits and single dots: never ``..``, ``/`` or a hidden name), so
they are accepted."""


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network.

    Attributes:
        ae_title: its AE title (1 to 16 characters, no backslash or control character, surrounding spaces removed).
        host: host name or IP address.
        port: TCP port, ``None`` where only the calling side is described (an ``--allow`` entry without a port).
    """

    ae_title: str
    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}" + (f":{self.port}" if self.port is not None else "")

    def addresses(self) -> frozenset[str]:
        """The IP addresses ``host`` stands for (a name is resolved; IPv4-mapped IPv6 addresses as IPv4).

        Raises:
            ValueError: the host name does not resolve.
        """
        try:
            infos = socket.getaddrinfo(self.host, None, proto=socket.IPPROTO_TCP)
        except OSError as e:
            raise ValueError(f"'{self}': the host '{self.host}' does not resolve ({e.strerror or e}).") from e
        return frozenset(normal_address(info[4][0]) for info in infos)


@dataclass(frozen=True)
class AllowedCaller:
    """An ``--allow`` entry and the addresses its host stands for: a calling AE is allowed when its title and the
    address it connects from both match. With a port, the caller is also a destination for the results of the series
    it sends."""

    peer: Peer
    addresses: frozenset[str]

    @classmethod
    def resolve(cls, peer: Peer) -> "AllowedCaller":
        """The entry with its host resolved now (once, at start).

        Raises:
            ValueError: the host name does not resolve.
        """
        return cls(peer, peer.addresses())

    def matches(self, ae_title: str, address: str) -> bool:
        return self.peer.ae_title == ae_title and normal_address(address) in self.addresses


def normal_address(address: str) -> str:
    """``address`` in one spelling: an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as IPv4, a zone id dropped."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` without surrounding spaces, once it is a valid AE title.

    Raises:
        ValueError: it is empty, longer than 16 characters, or holds a backslash or a control character.
    """
    text = str(title).strip()
    if not text:
        raise ValueError(f"{what} is empty; give 1 to {MAX_AE_TITLE_CHARS} characters.")
    if len(text) > MAX_AE_TITLE_CHARS:
        raise ValueError(f"{what} '{text}' is longer than {MAX_AE_TITLE_CHARS} characters.")
    if "\\" in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} {text!r} holds a backslash or a control character, which DICOM does not allow.")
    return text


def parse_peer(text: str, need_port: bool) -> Peer:
    """Parse ``AE@host`` or ``AE@host:port`` (an IPv6 address in brackets: ``AE@[::1]:104``).

    Args:
        text: the peer as written on the command line.
        need_port: whether the port is required (a destination) or optional (an allowed calling AE).

    Raises:
        ValueError: the text is not of that form, the AE title is invalid, or the port is not in 1-65535.
    """
    form = "AE@host:port" if need_port else "AE@host or AE@host:port"
    ae, at, rest = str(text).rpartition("@")
    if not at or not rest:
        raise ValueError(f"'{text}' is not of the form {form}.")
    ae = check_ae_title(ae, f"the AE title of '{text}'")
    port_text = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"'{text}': an IPv6 address is written in brackets, e.g. AE@[::1]:104.")
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    elif ":" in rest:
        raise ValueError(f"'{text}': write an IPv6 address in brackets, e.g. AE@[::1]:104.")
    else:
        host = rest
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"'{text}' has no valid host; it is not of the form {form}.")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"'{text}': the port must be a number from 1 to 65535.")
        port = int(port_text)
    elif need_port:
        raise ValueError(f"'{text}' has no port; it is not of the form {form}.")
    return Peer(ae, host, port)


def is_uid(value: object) -> bool:
    """Whether ``value`` (trailing NUL and spaces removed) is a UID that is safe as a path component."""
    text = str(value if value is not None else "").rstrip("\0 ")
    return 0 < len(text) <= MAX_UID_CHARS and _UID.fullmatch(text) is not None


def check_uid(value: object, what: str) -> str:
    """``value`` as text, once it is a UID (:func:`is_uid`).

    Raises:
        ValueError: it is missing, too long, or holds anything but digits in dot-separated components.
    """
    if not is_uid(value):
        shown = str(value)[:80] if value is not None else "missing"
        raise ValueError(
            f"{what} {shown!r} is not a valid UID (digits in dot-separated components, at most {MAX_UID_CHARS} "
            "characters)."
        )
    return str(value).rstrip("\0 ")
