"""crio: a Kubernetes CRI v1 container runtime, after CRI-O.

The core owns the CRI API, pod and container state, the image and layer
store, configuration and the plugin host; every technology (OCI runtimes,
graph drivers, image transports, networking) is a plugin found through the
``crio.plugins`` entry-point group.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crio")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
