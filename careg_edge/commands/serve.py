"""`careg-edge serve`: inspection behind Triton Inference Server (PyTriton), or
`--export-repo DIR`: a model repository for the stock Triton container."""
from __future__ import annotations

import click

from ..errors import UserInputError

EPILOG = """\b
Examples:
  build/serve-venv/bin/careg-edge serve --profiles profiles/ --port 8000 --max-batch 8
  build/serve-venv/bin/careg-edge serve --profiles a.careg b.careg --web :8080 --mqtt broker:1883
  careg-edge serve --export-repo triton-repo/ --profiles profiles/
  careg-edge run --server http://127.0.0.1:8000 --product flange --images 'batch7/*.png'
See docs/serving.md.
"""


@click.command("serve", epilog=EPILOG)
@click.option("--profiles", "profiles", multiple=True, metavar="DIR|FILE",
              help="Profile files or a folder of them (*.careg); the file stem is the product "
                   "name requests carry. A changed file is reloaded while serving.")
@click.argument("more_profiles", nargs=-1, metavar="[PROFILE]...")
@click.option("--model", default=None, metavar="PATH",
              help="Encoder the profiles were enrolled with (default: the bundled one).")
@click.option("--port", type=click.IntRange(1, 65533), default=8000, show_default=True,
              help="Triton HTTP port; gRPC is PORT+1, Prometheus metrics PORT+2.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address Triton listens on (0.0.0.0 for every interface).")
@click.option("--max-batch", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Largest dynamic batch Triton forms across clients.")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="How long Triton may hold a request to fill a batch (microseconds).")
@click.option("--max-image-bytes", type=click.IntRange(min=1), default=16 * 1024 * 1024,
              show_default=True, help="Largest encoded image a request may carry.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between checks of the profile files for changes.")
@click.option("--export-repo", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a Triton model repository (ONNX encoder, Python-backend scoring, "
                   "ensemble) for the stock Triton container instead of serving.")
@click.option("--mqtt", default=None, metavar="HOST[:PORT]",
              help="Publish each verdict to MQTT (topic careg/LINE/PRODUCT/verdict).")
@click.option("--mqtt-queue", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Verdicts held per product while the broker is unreachable.")
@click.option("--opcua", default=None, metavar="[HOST]:PORT",
              help="Latest verdict and counters of all products as OPC UA variables (product 'all').")
@click.option("--web", default=None, metavar="[HOST]:PORT", help="Live view of the served frames.")
@click.option("--line", default="line1", show_default=True, metavar="NAME",
              help="Line name for --mqtt/--opcua/--web.")
def command(profiles, more_profiles, model, port, address, max_batch, queue_delay_us,
            max_image_bytes, poll, export_repo, mqtt, mqtt_queue, opcua, web, line):
    """Serve inspection to many cameras and products behind Triton Inference Server.

    Requests carry an encoded image and a product name; Triton batches them across
    clients, each is scored against that product's profile. Runs until Ctrl-C.
    """
    from ..cli_context import make_inspector, settings

    s = settings()
    sources = list(profiles) + list(more_profiles)
    if export_repo is not None:
        from ..serve.repo_export import export_repo as write_repo
        if mqtt or opcua or web:
            raise UserInputError("--export-repo: --mqtt/--opcua/--web apply to a running server only")
        written = write_repo(export_repo, model=model, profiles=sources, max_batch=max_batch)
        s.info(f"wrote a Triton model repository to {written} (see docs/serving.md)")
        return 0
    if not sources:
        raise UserInputError("--profiles: give a folder of profiles or profile files")
    from ..serve.server import need_pytriton
    need_pytriton()   # before loading anything: one line saying how to get it
    from ..publish import plain_name
    from ..serve import MODEL_NAME
    from ..serve.line import ServeOutputs
    from ..serve.registry import ProfileRegistry
    from ..serve.server import Handler, TritonService
    insp = make_inspector(model)
    insp.batch_size = max_batch
    registry = ProfileRegistry(sources, check=insp.check, log=s.info, poll_s=poll)
    outputs = ServeOutputs(mqtt, mqtt_queue, opcua, web, plain_name(line, "--line"), log=s.info) \
        if (mqtt or opcua or web) else None
    service = None
    try:
        service = TritonService(Handler(insp, registry, outputs, max_image_bytes), address, port,
                                max_batch, queue_delay_us, log=s.info).start()
        registry.start()
        u = service.urls
        s.info(f"serving {', '.join(registry.names())} as model '{MODEL_NAME}' at {u['http']} "
               f"(gRPC {u['grpc']}); metrics at {u['metrics']}; Ctrl-C stops"
               + (f"; Triton's log: {service.log_file}" if service.log_file else ""))
        _wait(service)
    finally:
        registry.stop()
        if service is not None:
            service.stop()
        if outputs is not None:
            outputs.close()
    return 0


def _wait(service) -> None:
    """Until Ctrl-C or SIGTERM (both end the server cleanly). Both handlers are set
    here, not inherited: a shell starts background jobs with SIGINT ignored, and a
    server started that way must still stop on Ctrl-C / `kill -INT`."""
    import signal
    stop = lambda *a: service.stopped.set()  # noqa: E731
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
