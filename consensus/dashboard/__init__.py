"""``quorumboard dashboard``: a read-only page over a live cluster or a finished run's folder.

The ``[dashboard]`` extra (Starlette and uvicorn); nothing in the core imports this package, and
the CLI imports it only for the ``dashboard`` command and ``demo --dashboard``.

* :mod:`.models`: the pydantic views the page is served (nothing else leaves the server).
* :mod:`.live`: a cluster's views: replica status polled at a bounded rate, cached reads,
  and one gap-free watch per open page.
* :mod:`.runs`: a chaos run's folder (verdict, figures, timeline) or an experiment's (the
  report's tables and plots).
* :mod:`.app`: the Starlette application: GET routes only, a token when one is configured,
  and headers that keep the page to itself.
* :mod:`.serve`: the command line, and a server on a thread for the demo.
"""
