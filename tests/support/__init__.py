"""Helpers shared by the tests and the benchmarks, one module per concern.

- :mod:`support.gradcheck`: centered finite differences in float64 (cs231n's gradient check).
- :mod:`support.twins`: the PyTorch twins (a layer or a model rebuilt in PyTorch with copies of
  our parameters) and the comparison that shows ours against theirs; ``benchmarks/bench.py``
  builds its PyTorch Model 1 with :func:`support.twins.torch_twin`.
- :mod:`support.fakes`: toy data, small checkpoints, IDX, CSV and wheel writers.
- :mod:`support.runs`: the tiny training recipe of the robustness matrix and the state of a run.
- :mod:`support.payloads`: malicious pickles.
- :mod:`support.processes`: the command line in a real process, and Ctrl-C for its children.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so a test writes ``from support.fakes import
make_data``. The ``conftest.py`` files hold fixtures only; no module here imports one (several
share the module name ``conftest``). Nothing here imports pytest, so a script outside the test run
(a subprocess a test starts, the benchmark) can use these helpers too.
"""
