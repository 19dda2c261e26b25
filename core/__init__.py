"""crio: a Kubernetes CRI v1 container runtime, after CRI-O.

The core owns the CRI API, pod and container state, the image and layer
store, configuration and the plugin host; every technology (OCI runtimes,
graph drivers, image transports, networking) is a plugin found through the
``crio.plugins`` entry-point group.
"""

#: The same as ``version`` in pyproject.toml (tests/unit/test_version.py checks it).
#: Written out rather than read from the installed metadata: that lookup cost every
#: crio and kpod process ~20 ms before it could do anything.
__version__ = "0.1.0"

__all__ = ["__version__"]
