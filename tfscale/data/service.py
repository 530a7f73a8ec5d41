"""tf.data service: move preprocessing onto other machines.

    tfscale data serve --dispatcher --port 5050                      # one machine
    tfscale data serve --worker --dispatcher-address HOST:5050       # each preprocessing machine
    train = ts.data.image_folder("photos", image_size=(96, 96)).service("grpc://HOST:5050")

The service workers read the files, so the paths must be reachable from them.
TF's gRPC servers have no authentication: run them on a private network.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from tfscale.data import transforms
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")

MODES = ("distributed_epoch", "parallel_epochs")


def check_options(address: str, processing_mode: str, job_name: str | None) -> dict:
    if processing_mode not in MODES:
        raise ConfigError(f"processing_mode={processing_mode!r} is not accepted", where="Pipeline.service()",
                          fix="use 'distributed_epoch' (each element once per epoch over all service workers) "
                              "or 'parallel_epochs' (every service worker produces the whole data)")
    if "://" not in address:
        address = "grpc://" + address
    return {"address": address, "processing_mode": processing_mode, "job_name": job_name}


def through_service(pipeline, input_context: tf.distribute.InputContext, batching) -> tf.data.Dataset:
    """The pipeline built whole (the service shares it out), run by the service, read by this consumer.

    With several input pipelines (training workers) all consumers join one job,
    so in "distributed_epoch" mode each element goes to one of them.
    """
    options = pipeline.service_options
    plain = pipeline._with(service_options=None)
    build = plain._build_for(tf.distribute.InputContext(), in_service=True)
    ops = plain.ops
    if batching is not None:
        from tfscale.data.core import Op

        batch_size, drop_remainder, static = batching
        ops = ops + (Op("batch", transforms.batch_op(batch_size, drop_remainder, static=static), keeps_records=False,
                        payload="batch"),)
    ds = transforms.with_options(transforms.apply_ops(plain._records(build), ops, build, plain.records), build)
    job = options["job_name"]
    if job is None and input_context.num_input_pipelines > 1:
        job = "tfscale-" + options["processing_mode"]
    log.info("reading %r through tf.data service at %s (%s, job %s)", plain, options["address"],
             options["processing_mode"], job)
    return ds.apply(tf.data.experimental.service.distribute(
        processing_mode=options["processing_mode"], service=options["address"], job_name=job))


def start_dispatcher(port: int = 0, *, work_dir: str | None = None) -> tf.data.experimental.service.DispatchServer:
    """Starts a tf.data service dispatcher on `port` (0: a free one; see `.target`)."""
    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir,
                                                           fault_tolerant_mode=bool(work_dir))
    server = tf.data.experimental.service.DispatchServer(config)
    log.info("tf.data service dispatcher at %s", server.target)
    return server


def start_worker(dispatcher_address: str, port: int = 0, *, worker_address: str | None = None):
    """Starts a tf.data service worker that registers with the dispatcher at `dispatcher_address`."""
    dispatcher_address = dispatcher_address.split("://", 1)[-1]
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher_address, port=port,
                                                       worker_address=worker_address)
    server = tf.data.experimental.service.WorkerServer(config)
    log.info("tf.data service worker on port %s for dispatcher %s", port, dispatcher_address)
    return server
