"""Driver for PyPI ``fdfs-client-py3`` (module fdfs_client; Fdfs_client(conf_path)).
See _legacy_fdfs_client.py for the operations and the client's known defects."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# Do not let this directory shadow installed packages (see _drvcommon).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
import fdfs_client  # noqa: E402,F401  (the installed package)
sys.path.append(_HERE)

from _drvcommon import run  # noqa: E402
from _legacy_fdfs_client import UNSUPPORTED, make_handlers  # noqa: E402

if __name__ == "__main__":
    run(make_handlers("conf"), UNSUPPORTED)
