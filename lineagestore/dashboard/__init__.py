"""The dashboard: what `lin report` writes as one HTML file and `lin serve` shows live.

``data.gather`` reads the store once into a plain, JSON-able :class:`data.Dashboard`;
``report.render`` turns it into a self-contained page; ``serve`` serves that page and its
figures read-only. Nothing here writes to the store.
"""
