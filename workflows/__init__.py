"""Ray drivers (one module per stage) and the ``disenttalk`` command line."""
