"""A sweep's runs on Ray: one worker process per run (one GPU each where the cluster has GPUs), on this machine or
on a cluster at an address; each worker executes its run's notebook in its own kernel, as a one-job sweep does."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from xraylib.errors import InputError
from xraylib.runs import read_status, write_status

# Ray's shared-memory object store holds only the runs' small status dicts here.
OBJECT_STORE_BYTES = 100 * 2**20


def check_address(address: str | None, timeout: float = 3.0) -> None:
    """Refuse in one line, within `timeout` seconds, a Ray address (`ray://host:port`, `host:port`) where nothing
    accepts a connection; Ray itself waits about half a minute and logs warnings before failing. `auto`, `local`
    and no address are left to Ray."""
    if not address or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # no port given: Ray's defaults (the client server's, the GCS's)
        host, port = address.removeprefix("ray://"), "10001" if client else "6379"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise InputError(f"--address {address}: no Ray cluster answers at {host}:{port} ({reason})") from None


def start_ray(jobs: int, address: str | None) -> bool:
    """Connect to the Ray cluster at `address` (`auto`, `ray://host:port`), or start one on this machine with
    `jobs` CPUs. True if this call started or connected it (and so should shut it down)."""
    try:
        import ray
    except ImportError:
        raise InputError("--jobs above 1 and --address need Ray: pip install 'xraylib[sweep]'") from None
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=jobs, object_store_memory=OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"--address {address}: no Ray cluster there ({str(exc).splitlines()[0]})") from exc
    return True


def on_ray(
    run: Callable[..., dict], tasks: list[tuple], running: set[Path], jobs: int, address: str | None
) -> Iterator[tuple[Path, dict]]:
    """(run folder, status) of each `run(*task)` as it finishes, at most `jobs` at once; a task's last item is its
    run folder. A run whose worker died is recorded as failed; on Ctrl-C the runs in flight are cancelled and
    recorded as interrupted."""
    import ray

    started = start_ray(jobs, address)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(run)
        pending, in_flight = list(tasks), {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < jobs:
                    task = pending.pop(0)
                    in_flight[remote.remote(*task)] = task[-1]
                    running.add(task[-1])
                done, _ = ray.wait(list(in_flight), num_returns=1)
                folder = in_flight.pop(done[0])
                running.discard(folder)
                yield folder, _result(done[0], folder)
        except KeyboardInterrupt:
            for ref, folder in in_flight.items():
                ray.cancel(ref, force=True)
                _record(folder, "interrupted", "interrupted; `--resume` continues it")
            raise
    finally:
        if started:
            ray.shutdown()


def _result(ref, folder: Path) -> dict:
    """The status a finished task returned, or a failed status when its worker died."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        reason = type(exc).__name__
        return _record(folder, "failed", f"the Ray worker running it died ({reason}); `--resume` reruns it")


def _record(folder: Path, status: str, error: str) -> dict:
    """Write a run's status.json for a worker that could not write it itself."""
    before = read_status(folder)
    seconds = round(time.time() - before.get("started", time.time()), 1)
    record = {"backbone": before.get("backbone", folder.name), "status": status, "error": error, "seconds": seconds}
    write_status(folder, record)
    return record
