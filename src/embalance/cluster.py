"""The sweep's cells as tasks on a Dask cluster, streamed back to the driver that writes and logs them.

One machine is the default: with no scheduler address (``cluster.address`` in params.yaml, else Dask's own
``DASK_SCHEDULER_ADDRESS`` or ``scheduler-address`` in its configuration files), the sweep runs its cells here as
it always has. With one, the driver (``embalance sweep``, under ``dvc repro`` or ``mlflow run`` alike) sends the
embeddings to every worker once, submits each (method, size, draw) cell as a task, and takes the results as they
finish: the MLflow runs, the checkpoint and the results files are written by the driver alone, as on one
machine, so workers need neither the tracking store nor the project's files, only the same embalance code.

Why Dask (docs/team.md says more): its scheduler and workers are two commands on any machines, it starts a real
local cluster in tests, and dask-jobqueue submits the same workers to Slurm or PBS, where most research clusters
are. A worker that dies (killed, out of memory, its machine lost) has its task re-run on another worker by the
scheduler; the driver logs a cell only once its result is back, so nothing is logged twice. An interrupted driver
resumes from its checkpoint, as on one machine.

Same results: a cell's fold metrics do not depend on which cells share a training group or on how many threads
train them (the engines' tests; ``tests/test_cluster.py`` compares a cluster sweep with a one-machine sweep bit
for bit). Each task trains with one thread per Dask worker thread: start workers with ``--nthreads 1`` and as
many ``--nworkers`` as the machine has cores (or one per GPU).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embalance.codedeps import SRC, sweep_files
from embalance.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from embalance.experiment.cells import Cell
    from embalance.experiment.protocol import Embeddings
    from embalance.experiment.recipe import FoldOutcome

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"  # Dask's own variable (its config key `scheduler-address`)


def scheduler_address(params: Mapping[str, Any]) -> str | None:
    """The scheduler to run on: ``cluster.address``, else Dask's configured ``scheduler-address``, else None."""
    address = (params.get("cluster") or {}).get("address")
    if address:
        return str(address)
    if os.environ.get(ADDRESS_ENV):
        return os.environ[ADDRESS_ENV]
    if not _has_dask_config_files():
        return None  # importing dask to read an absent configuration would only slow every sweep down
    import dask.config

    return dask.config.get("scheduler-address", None) or None


def _has_dask_config_files() -> bool:
    folders = [os.environ.get("DASK_CONFIG") or "", Path.home() / ".config" / "dask", "/etc/dask"]
    return any(Path(f).is_dir() and any(Path(f).glob("*.y*ml")) for f in folders if f)


@contextlib.contextmanager
def connect(address: str, timeout: float) -> Iterator[Client]:
    """A client of the scheduler at ``address`` that has at least one worker; a ConfigError when there is none."""
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ConfigError(
            f"No Dask scheduler answers at {address!r} within {timeout:g} s ({type(e).__name__}: {e}); start one with "
            f"`dask scheduler`, or unset `cluster.address` and {ADDRESS_ENV} to run the sweep on this machine."
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ConfigError(
                f"The Dask scheduler at {address!r} has no worker after {timeout:g} s; start some with "
                f"`dask worker {address} --nthreads 1 --nworkers <cores>` in the project's environment."
            ) from None
        check_code(client)
        yield client
    finally:
        with contextlib.suppress(Exception):  # closing a client whose scheduler went away must not hide the real error
            client.close()


def code_digest() -> str:
    """A hash of the code that computes a cell, to refuse workers that run other code: the files of the sweep stage's
    closure (:func:`embalance.codedeps.sweep_files`, the same list as the sweep's source deps in dvc.yaml); the
    sweep's resume key hashes it too."""
    h = hashlib.sha256()
    for path in sweep_files():
        h.update(path.relative_to(SRC).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def check_code(client: Client) -> None:
    """Every worker must compute cells with this driver's code: a ConfigError naming those that do not."""
    mine = code_digest()
    try:
        theirs = client.run(code_digest)
    except ModuleNotFoundError as e:
        raise ConfigError(f"A Dask worker cannot import embalance ({e}); start the workers in the project's environment.") from None
    other = sorted(w for w, digest in theirs.items() if digest != mine)
    if other:
        raise ConfigError(
            f"Dask worker(s) {', '.join(other)} run other embalance code than this driver (experiment code {mine}, "
            f"theirs {theirs[other[0]]}); install the same version there, or the results would not be the ones recorded."
        )


def describe(client: Client) -> str:
    """``2 workers, 2 threads``: what the cluster has now."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return f"{len(workers)} worker{'s' * (len(workers) != 1)}, {sum(w['nthreads'] for w in workers)} threads"


def run_cells_on(
    client: Client, emb: Embeddings, cells: Sequence[Cell], *, params: Mapping[str, Any], dataset: str
) -> Iterator[tuple[str, int, int, list[FoldOutcome]]]:
    """Each cell as a task on the cluster; yields (method, size, draw, fold outcomes) as cells finish (in any order).

    The embeddings go to every worker once. A task whose worker dies is re-run by the scheduler on another worker
    (up to Dask's ``distributed.scheduler.allowed-failures`` times). Tasks not yet done are cancelled when the caller
    stops early (an interruption, an error while logging).
    """
    from distributed import as_completed

    if not cells:
        return
    shared = client.scatter(emb, broadcast=True, hash=False)
    digest = code_digest()  # each task checks its worker's code against it (workers may join mid-sweep)
    token = uuid.uuid4().hex[:8]  # a fresh key per sweep: the scheduler never hands back an old sweep's result
    futures = {
        client.submit(run_cell_task, shared, cell, params, dataset, digest, key=f"embalance-cell-{dataset}-{cell[0]}-n{cell[1]}-d{cell[2]}-{token}", pure=False): cell
        for cell in cells
    }
    try:
        for future in as_completed(futures, loop=client.loop):
            method, size, draw = futures[future]
            yield method, size, draw, future.result()
            future.release()
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(pending)


def run_cell_task(emb: Embeddings, cell: Cell, params: Mapping[str, Any], dataset: str, digest: str | None = None) -> list[FoldOutcome]:
    """On a worker: one cell's folds, trained with one thread (the worker's threads are the parallelism).

    ``digest``: the driver's :func:`code_digest`. The driver checks the workers it finds when it connects; this
    check refuses a worker that joined later with other code, before it computes anything.
    """
    from embalance.experiment.cells import run_cells

    if digest is not None and (mine := code_digest()) != digest:
        try:
            from distributed import get_worker

            where = f"Dask worker {get_worker().address}"
        except (ImportError, ValueError):  # not on a worker (called directly)
            where = "This process"
        raise ConfigError(
            f"{where} runs other embalance code than the driver (experiment code {mine}, the driver's {digest}); "
            "install the same version there, or the results would not be the ones recorded."
        )

    p = copy.deepcopy(dict(params))
    p["train"] = {**p["train"], "threads": 1}  # a speed setting: the fold metrics are the same with any thread count
    return next(run_cells(emb, [cell], params=p, dataset=dataset))[3]
