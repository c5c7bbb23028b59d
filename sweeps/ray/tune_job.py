"""Entry point for ``ray submit <cluster.yaml> sweeps/ray/tune_job.py -- <td3.tune arguments>``:
``ray submit`` runs a script file, td3's Tune driver is a module."""
import sys

from td3.tune import main

if __name__ == "__main__":
    sys.exit(main(["--address", "auto", *sys.argv[1:]]))
