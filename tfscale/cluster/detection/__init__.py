"""Where am I: the cluster this process is part of (TF_CONFIG, Slurm, Kubernetes, TPU) and its local devices.

The worker side of `tfscale.cluster`. Modules here may import TensorFlow
(inside the functions that need it): `devices` lists GPUs/TPUs, `environment`
reads a GPU Slurm job with TensorFlow's resolver. `slurm` and `tf_config` are
standard library only, and the launch side uses them.
"""
