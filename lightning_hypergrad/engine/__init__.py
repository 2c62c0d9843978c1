"""The implicit-function-theorem hypergradient (``hypergradient.py``), the checks of its inputs (``inputs.py``) and
the vector algebra it and the solvers share (``vectors.py``): torch only, never Lightning. The public names are
re-exported by ``lightning_hypergrad``; this package imports nothing itself, since the solvers it calls use its
vector algebra."""
