"""mltrail's version (``mltrail.__version__``), in a module of its own so that the core can
record it (the ``mltrail.version`` tag) without importing the package's top level."""

__version__ = "0.1.0"
