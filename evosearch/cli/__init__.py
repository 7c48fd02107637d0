"""The ``evosearch`` command line: one module per command group, one output sink (:mod:`.output`).

Commands parse their arguments, call the library and hand data to :func:`.output.emit`; the HTML
report lives here too, since only ``evosearch report`` draws it.
"""

from evosearch.cli.main import main

__all__ = ["main"]
