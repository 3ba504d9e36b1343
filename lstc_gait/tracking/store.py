"""The MLflow store, set up once: tracking URI rule, SQLite folder, experiment creation, retries.

Every tracking user (the run tracker, the sweep callback, the report) gets its client from
:func:`open_store`, which never touches MLflow's process-wide tracking URI. The default store is
``sqlite:///<output_dir>/mlflow.db`` with artifacts in ``<output_dir>/mlartifacts`` (MLflow 3
refuses plain file stores); ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` points anywhere else.
``mlflow`` is imported lazily.

Creating a SQLite store (MLflow's tables and schema migrations) is not safe when several processes
do it at once; :func:`open_store` holds an exclusive file lock beside the database
(``<db>.lock``) while the first client of a process reaches the store, so any number of sweeps,
single runs and DDP ranks may start together on a store that does not exist yet.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "lstc_gait"
# MLflow 3's UI has a GenAI and a model-training mode; this tag marks what our experiments are.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_HOST = "127.0.0.1"
UI_PORT = 5000
T = TypeVar("T")
_READY: set[str] = set()  # store URIs this process has opened (tables created / migrated)

_TRANSIENT = ("database is locked", "database table is locked", "sqlite_busy", "could not obtain lock")


def _is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += f" {cause}".lower()
    return any(t in text for t in _TRANSIENT)


def call_with_retry(fn: Callable[..., T], *args: Any, attempts: int = 12, base_delay: float = 0.05,
                    max_delay: float = 2.0, **kwargs: Any) -> T:
    """Call an MLflow client function, retrying while SQLite reports that the database is locked.

    Several sweep jobs writing one store at once lock it briefly; the call is retried with jittered
    exponential backoff. Other errors, and the last lock error, propagate unchanged.

    Args:
        fn: The function.
        *args: Its positional arguments.
        attempts: Calls at most.
        base_delay: First wait (seconds), doubled per retry.
        max_delay: Longest wait (seconds).
        **kwargs: Its keyword arguments.

    Returns:
        What ``fn`` returns.

    Raises:
        Exception: Whatever ``fn`` raised, when not transient or on the last attempt.
    """
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not _is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** attempt) * (0.5 + random.random())
            log.debug("MLflow store busy (%s); retry %d in %.2fs", exc, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def resolve_tracking_uri(uri: str | None = None, output_dir: str | os.PathLike = "outputs") -> str:
    """The store a job uses: explicit ``uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<output_dir>/mlflow.db``.

    Relative SQLite paths are made absolute against the current directory, so spawned or launched
    processes reach the same file.

    Args:
        uri: The configured URI (``tracking.uri``), or None.
        output_dir: ``paths.output_dir``.

    Returns:
        The tracking URI.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return "sqlite:///" + str((Path(output_dir) / "mlflow.db").absolute())
    path = _sqlite_file(uri)
    if path is not None and not os.path.isabs(path):
        return "sqlite:///" + str(Path(path).absolute())
    return uri


def _sqlite_file(uri: str) -> str | None:
    # the file part of a sqlite:/// URI as written; None for other stores and in-memory SQLite
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return path
    return None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite).

    Args:
        uri: A tracking URI.

    Returns:
        The file path, or None.
    """
    path = _sqlite_file(uri)
    return Path(path).expanduser() if path is not None else None


def default_artifact_location(uri: str) -> str | None:
    """``<store dir>/mlartifacts`` (file URI) for a local SQLite store; None lets the server decide.

    Args:
        uri: A tracking URI.

    Returns:
        The artifact location, or None.
    """
    path = sqlite_path(uri)
    return (path.absolute().parent / "mlartifacts").as_uri() if path is not None else None


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created when missing (restored when deleted).

    On a local SQLite store its artifacts go to ``<store dir>/mlartifacts`` (not ./mlruns). A
    concurrent creator (another sweep job) is tolerated.

    Args:
        client: An ``mlflow.MlflowClient``.
        name: The experiment's name.
        artifact_location: Where its artifacts go (None: :func:`default_artifact_location`).

    Experiments made here are tagged ``mlflow.experimentKind=custom_model_development`` (model
    training, not GenAI); an existing experiment without that tag gets it.

    Returns:
        The experiment id.

    Raises:
        mlflow.exceptions.MlflowException: The store refuses to create it.
    """
    exp = call_with_retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            call_with_retry(client.restore_experiment, exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made by an older version: say what it is
            call_with_retry(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return str(exp.experiment_id)
    location = artifact_location or default_artifact_location(str(client.tracking_uri))
    try:
        return str(call_with_retry(client.create_experiment, name, artifact_location=location,
                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
    except Exception:
        exp = call_with_retry(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return str(exp.experiment_id)


@dataclass
class Store:
    """An opened tracking store.

    Attributes:
        uri: Its tracking URI.
        client: An ``mlflow.MlflowClient`` bound to it.
    """

    uri: str
    client: Any

    def experiment(self, name: str = DEFAULT_EXPERIMENT, artifact_location: str | None = None) -> str:
        """Id of experiment ``name`` (see :func:`ensure_experiment`).

        Args:
            name: The experiment's name.
            artifact_location: Where its artifacts go (None: the store's default).

        Returns:
            The experiment id.
        """
        return ensure_experiment(self.client, name, artifact_location)


def store_lock_path(uri: str) -> Path | None:
    """The lock file guarding creation and migration of a SQLite store: ``<db file>.lock`` beside it.

    Args:
        uri: A tracking URI.

    Returns:
        The lock file, or None for stores that need none (servers, other databases, in-memory SQLite).
    """
    path = sqlite_path(uri)
    return path.absolute().with_name(path.name + ".lock") if path is not None else None


def open_store(uri: str | None = None, output_dir: str | os.PathLike = "outputs", create: bool = True) -> Store:
    """Open the tracking store a config names (the one place MLflow clients are made).

    For a SQLite store, the first opening in a process reaches the database while holding
    :func:`store_lock_path`'s lock, so MLflow creates its tables and runs its migrations in one
    process at a time; the others wait and find the store ready.

    Args:
        uri: ``tracking.uri`` (None: ``$MLFLOW_TRACKING_URI``, else the default SQLite file).
        output_dir: ``paths.output_dir``.
        create: Create the SQLite file's folder; with False a missing local store raises instead
            (readers such as the report must not create empty stores).

    Returns:
        The store.

    Raises:
        FileNotFoundError: ``create`` is False and the SQLite file does not exist.
        mlflow.exceptions.MlflowException: The store cannot be opened or migrated.
    """
    import mlflow

    resolved = resolve_tracking_uri(uri, output_dir)
    path = sqlite_path(resolved)
    if path is not None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise FileNotFoundError(f"no MLflow store at {resolved} (set tracking.uri=...)")
    lock = store_lock_path(resolved)
    if lock is None or resolved in _READY:
        return Store(resolved, mlflow.MlflowClient(tracking_uri=resolved))
    from lstc_gait.utils.locking import exclusive_lock

    with exclusive_lock(lock):
        # making the client and its first call reach the store: MLflow creates/migrates the tables here
        client = mlflow.MlflowClient(tracking_uri=resolved)
        call_with_retry(client.search_experiments, max_results=1)
    _READY.add(resolved)
    return Store(resolved, client)


def ui_command(uri: str) -> str | None:
    """The command that serves a store's UI, or None when the store is a server already.

    Args:
        uri: A tracking URI.

    Returns:
        ``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000`` for a local store.
    """
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return f"mlflow ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


def run_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI page of a run (or of its experiment's runs) in the model-training view.

    ``workflowType=machine_learning`` makes MLflow 3's UI open its model-training view instead of
    its GenAI default.

    Args:
        uri: The tracking URI (a server's address is used as is; local stores: ``mlflow ui``'s address).
        experiment_id: The experiment.
        run_id: The run (None: the experiment's runs table).

    Returns:
        The URL.
    """
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://{UI_HOST}:{UI_PORT}"
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def how_to_view(uri: str, experiment_id: str, run_id: str | None = None, what: str = "run") -> str:
    """The lines printed when a run or sweep ends: how to open it in the MLflow UI.

    Args:
        uri: The tracking URI.
        experiment_id: The experiment.
        run_id: The run (or sweep parent run).
        what: What the page shows (``run``, ``sweep``).

    Returns:
        Two or three lines: the ``mlflow ui`` command (local stores) and the page's URL.
    """
    lines = [f"MLflow {what} {run_id or ''} (experiment {experiment_id}) in {uri}".replace("  ", " ")]
    command = ui_command(uri)
    if command:
        lines.append(f"  view it:  {command}")
    lines.append(f"  then open {run_url(uri, experiment_id, run_id)}" if command else
                 f"  open {run_url(uri, experiment_id, run_id)}")
    return "\n".join(lines)


__all__ = ["DEFAULT_EXPERIMENT", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "Store", "call_with_retry",
           "default_artifact_location", "ensure_experiment", "how_to_view", "open_store", "resolve_tracking_uri",
           "run_url", "sqlite_path", "store_lock_path", "ui_command"]
