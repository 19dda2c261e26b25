"""Helpers shared by crio's tests (on sys.path through pytest's ``pythonpath``)."""
