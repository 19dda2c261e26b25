"""crio's built-in plugins, one subpackage each, registered through ``crio.plugins``.

They use only the public plugin API (:mod:`crio.hookspecs`, :data:`crio.plugins.hookimpl`)
and never import each other, so a vendor's plugin takes exactly the same path.
"""
