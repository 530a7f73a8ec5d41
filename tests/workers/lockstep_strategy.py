"""A strategy a user registers under a name of their own, declaring multi_worker's capabilities
(tests/test_registry.py): under `tfscale launch -n 2` its workers share keys (Engine.exchange, which the
shared-checkpoint check and the preemption agreement use) and meet at exit, as multi_worker's do."""

import tfscale as ts
from tfscale.strategy import multi_worker
from tfscale.strategy.registry import Capability, register

register("my_lockstep", "multi_worker under another name",
         capabilities={Capability.LOCKSTEP, Capability.CLUSTER_RUNTIME})(multi_worker.build)
scale = ts.Scale("my_lockstep")
print(f"rank {scale.rank}: {scale.name} exchange {scale.engine.exchange('hello', f'r{scale.rank}')}", flush=True)
