"""The accuracy table of the validation matrix: `python bench/accuracy.py [--run]`.

The same as `tunefit validate`: with --run it first measures, on this CPU, every case of
profiler/matrix.py not yet in reports/data/cpu-validation.jsonl (appending as it goes), then prints
median / max |predicted - measured| / measured per method, ours next to the paper formula and two
calculator rules, and per phase.
"""

import sys

from tunefit.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
