"""Map the source folders onto import packages: core/ is `crio`, plugins/ is `crio_plugins`.

pyproject.toml cannot rename folders found by package discovery, so this
file lists the packages; everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup


def _renamed(folder: str, package: str) -> list[str]:
    found = find_packages(include=[folder, f"{folder}.*"])
    return [package + name[len(folder) :] for name in found]


setup(packages=_renamed("core", "crio") + _renamed("plugins", "crio_plugins"))
