"""``kubectl-mexp``: the kubectl plugin for ModelExperiments (``kubectl mexp ...``).

kubectl runs any ``kubectl-<name>`` executable on ``PATH`` as ``kubectl <name>``;
installing this package puts ``kubectl-mexp`` there.  Commands: ``get``,
``status``, ``promote``, ``abort``, ``restart``, ``pause``, ``resume``
(see docs/kubectl-plugin.md).  ``render`` holds the pure formatting,
``commands`` the flags and the API calls.
"""

from modelrollout.plugin.commands import main

__all__ = ["main"]
