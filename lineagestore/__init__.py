"""lineagestore: version control for fine-tuned models and the data they were trained on.

``from lineagestore import Repo`` gives the Python API; the ``lin`` command is a thin layer over it.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Repo", "__version__"]


def __getattr__(name: str):
    if name == "Repo":
        from .api import Repo
        return Repo
    raise AttributeError(name)
