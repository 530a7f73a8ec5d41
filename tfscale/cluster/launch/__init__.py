"""Launch: what `tfscale launch` and `tfscale.launch` do on the launcher's side.

Plans the cluster (`plan`, `hosts`, `ports`), starts and supervises the
worker processes (`group`, `launcher`), agrees on the hosts that go on after
one is lost in an elastic launch (`rendezvous`, ``--nnodes MIN:MAX``), runs a
function on every worker (`notebook`), and prints a Kubernetes manifest
(`indexed_job`). `backends` holds the `Launcher` interface and its
implementations (local, ``--hosts`` and its elastic form, Slurm, Kubernetes
manifest).

Never imports TensorFlow, Keras or JAX (an import-linter contract in
pyproject.toml checks it): a launcher starts in a fraction of a second, and
the worker processes import what they train with.
"""
