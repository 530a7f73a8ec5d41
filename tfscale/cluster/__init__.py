"""Where am I: `Topology` from TF_CONFIG / Slurm / Kubernetes / TPU / GPUs / CPU, and local devices."""

from tfscale.cluster.detection.topology import Topology, detect

__all__ = ["Topology", "detect"]
