"""``storage_option`` entries as graph drivers read them, and containers/storage's sizes.

``storage_option`` holds ``KEY=VALUE`` strings for every driver at once
(``overlay.mountopt=nodev``, ``btrfs.min_space=1G``, ``dm.basesize=20G``): a
driver takes the entries prefixed with one of its names, and the ones
without a prefix, and leaves the rest to the other drivers. Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from crio.errors import ConfigError

__all__ = ["OPTION_KEY", "driver_options", "parse_size"]

#: Where every driver option comes from, for error messages.
OPTION_KEY = "crio.storage_option"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def driver_options(options: Iterable[str], prefixes: Sequence[str]) -> list[tuple[str, str]]:
    """This driver's ``(key, value)`` pairs, keys lower-cased and without the prefix.

    :param prefixes: the driver's names as option prefixes (``("dm", "devicemapper")``).
    :raises ConfigError: an entry without ``=``.
    """
    mine: list[tuple[str, str]] = []
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise ConfigError(f"storage option {option!r} is not KEY=VALUE", key=OPTION_KEY)
        if "." in key:
            prefix, _, rest = key.partition(".")
            if prefix not in prefixes:
                continue  # another driver's option
            key = rest
        mine.append((key, value.strip()))
    return mine


def parse_size(text: str, option: str) -> int:
    """Bytes in a size as containers/storage writes it: ``10G``, ``512m``, ``1.5GiB``, ``4096``.

    Units are binary (k = 1024), as in Docker's ``units.RAMInBytes``.

    :param option: the option's name, for the error message.
    :raises ConfigError: not a size.
    """
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(
            f"storage option {option}: got {text!r}, expected a size such as 512M or 10G",
            key=OPTION_KEY,
        )
    number, unit = match.group(1), (match.group(2) or "").lower()
    return int(float(number) * (1024 ** _UNITS[unit]))
