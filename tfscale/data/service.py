"""tf.data service: move preprocessing onto other machines.

    tfscale data serve --dispatcher --port 5050                      # one machine
    tfscale data serve --worker --dispatcher-address HOST:5050       # each preprocessing machine
    train = ts.data.image_folder("photos", image_size=(96, 96)).service("grpc://HOST:5050")

The service workers read the files, so the paths must be reachable from them.
TF's gRPC servers have no authentication: run them on a private network.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from tfscale.data import badrecords, transforms
from tfscale.data.core import Op
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

    Batched in skip mode, each batch travels with the number of records the service worker dropped
    making it (`Build.carry`): this process adds them to the pipeline's `BadRecords`, so its epoch
    logs count them as without the service (the worker's own log names the records), and
    re-batches to whole batches.
    """
    options = pipeline.service_options
    plain = pipeline._with(service_options=None)
    build = plain._build_for(tf.distribute.InputContext(), in_service=True)
    carry = batching is not None and build.on_error == "skip"
    if batching is None:
        ds = transforms.apply_ops(plain._records(build), plain.ops, build, plain.records)
    else:
        batch_size, drop_remainder, static = batching
        batch = Op("batch", transforms.batch_op(batch_size, drop_remainder, static=static), keeps_records=False,
                   payload="batch", agnostic=True)
        build = dataclasses.replace(build, carry=carry)
        ds = plain.batched_records(build, plain.ops + (batch,))
    ds = transforms.with_options(ds, build)
    job = options["job_name"]
    if job is None and input_context.num_input_pipelines > 1:
        job = "tfscale-" + options["processing_mode"]
    log.info("reading %r through tf.data service at %s (%s, job %s)", plain, options["address"],
             options["processing_mode"], job)
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode=options["processing_mode"], service=options["address"], job_name=job))
    if not carry:
        return ds
    # the consumer: counts into this process's BadRecords, batches made whole again, a report each epoch
    ds = badrecords.note_counts(ds, plain.records, options["address"])
    ds = ds.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] > 0)
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder and static)
    if drop_remainder and not static:
        ds = ds.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] == batch_size)
    return badrecords.end_of_epoch(ds, plain.records, in_service=False)


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
