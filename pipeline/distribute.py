"""Distribution of the training phases over devices and machines with ``tf.distribute``.

``train.distribution`` picks the strategy both phases run under:

- ``none``: TensorFlow's default strategy (one device);
- ``mirrored``: ``tf.distribute.MirroredStrategy``, one replica per local GPU (the CPU when
  there is no GPU);
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines listed in
  the ``TF_CONFIG`` environment variable, one replica per GPU of each (or its CPU);
- ``auto``: ``mirrored`` when more than one GPU is visible, else ``none``.

Batch sizes in ``params.yaml`` are per replica: one optimizer step sees a global batch of
``batch_size * num_replicas`` images, and gradients are averaged over that global batch. The
learning rate is used as written (``train.learning_rate_scaling: none``) or multiplied by the
number of replicas (``linear``).

In a multi-worker run every worker runs the same stage command; only the chief (the ``chief``
task of ``TF_CONFIG``, or ``worker`` 0 when there is none) writes the stage's outputs. The other
workers take part in every step and write what they must into a scratch folder outside the
workspace, removed when the stage ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.params import TrainParams
from pipeline.utils import PipelineError, atomic_dir, log, seed_everything

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
    '"index": 0}}'
)
TASK_TYPES = ("chief", "worker")


def read_tf_config(raw: str | None = None) -> dict[str, Any] | None:
    """Parse and check ``TF_CONFIG`` (``raw``, or the environment variable when ``None``).

    Returns ``None`` when it is unset or blank. Raises :class:`PipelineError` naming the problem
    when it is not JSON, has no ``cluster`` of ``"host:port"`` lists, or its ``task`` is not one
    of the cluster's ``chief`` / ``worker`` tasks.
    """
    if raw is None:
        raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PipelineError(
            f"TF_CONFIG is not valid JSON ({exc}); expected e.g. {TF_CONFIG_EXAMPLE}"
        ) from None
    if not isinstance(config, dict):
        raise PipelineError(f"TF_CONFIG must be a JSON object, e.g. {TF_CONFIG_EXAMPLE}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise PipelineError(
            f"TF_CONFIG has no 'cluster' mapping of task types to host:port lists, e.g. "
            f"{TF_CONFIG_EXAMPLE}"
        )
    for kind, hosts in cluster.items():
        if kind not in TASK_TYPES:
            raise PipelineError(
                f"TF_CONFIG cluster has task type {kind!r}: MultiWorkerMirroredStrategy takes "
                f"only {' and '.join(TASK_TYPES)} tasks"
            )
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts)
        ):
            raise PipelineError(
                f"TF_CONFIG cluster.{kind} must be a non-empty list of 'host:port' strings, "
                f"got {hosts!r}"
            )
    if len(cluster.get("chief", [])) > 1:
        raise PipelineError("TF_CONFIG cluster.chief must list exactly one host")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise PipelineError(
            f"TF_CONFIG has no 'task' with 'type' and 'index' (which of the cluster's tasks this "
            f"process is), e.g. {TF_CONFIG_EXAMPLE}"
        )
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise PipelineError(
            f"TF_CONFIG task type {kind!r} is not in the cluster ({', '.join(cluster)})"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise PipelineError(
            f"TF_CONFIG task index {index!r} is out of range: cluster.{kind} has "
            f"{len(cluster[kind])} host(s)"
        )
    return config


def n_workers(config: dict[str, Any] | None) -> int:
    """Number of training processes (chief and workers) in a checked ``TF_CONFIG``."""
    if config is None:
        return 1
    return sum(len(config["cluster"].get(kind, [])) for kind in TASK_TYPES)


def is_chief_task(task_type: str | None, task_index: int | None, cluster: dict | None) -> bool:
    """Whether a task writes the outputs: the ``chief``, or ``worker`` 0 when there is no chief.

    A process outside any cluster (``task_type`` ``None``) is its own chief.
    """
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in (cluster or {})


def resolve_distribution(distribution: str, n_gpus: int) -> str:
    """The strategy ``train.distribution`` stands for: ``auto`` becomes mirrored or none."""
    if distribution == "auto":
        return "mirrored" if n_gpus > 1 else "none"
    return distribution


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's entries in ``/proc/cpuinfo`` (``vendor_id``, ``flags``, ...); empty
    where there is no such file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def check_cpu_precision(
    policy: str,
    n_gpus: int,
    env: Mapping[str, str] | None = None,
    cpu_flags: set[str] | None = None,
) -> None:
    """Fail clearly where ``policy`` cannot run on a CPU whose oneDNN is capped.

    ``pipeline/__init__.py`` caps oneDNN at AVX2 (``ONEDNN_MAX_CPU_ISA``) so that machines of a
    kind compute the same numbers. oneDNN's CPU bfloat16 kernels need AVX-512; and on a CPU with
    native float16 (``avx512_fp16``, e.g. Intel Sapphire Rapids) TensorFlow sends float16
    convolutions to oneDNN, which has no float16 kernel under the cap. Either way TensorFlow
    aborts in the first training step. ``cpu_flags``: the CPU's flags (default: this CPU's).
    """
    env = os.environ if env is None else env
    isa = env.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    capped = not isa.startswith(("AVX512", "AVX10", "ALL"))
    if n_gpus or not capped:
        return
    why = ""
    if policy == "mixed_bfloat16":
        why = "its bfloat16 kernels need AVX-512"
    elif policy == "mixed_float16" and "avx512_fp16" in (
        set(cpuinfo().get("flags", "").split()) if cpu_flags is None else cpu_flags
    ):
        why = "this CPU has native float16 (avx512_fp16), whose kernels the cap removes"
    if why:
        raise PipelineError(
            f"train.mixed_precision is '{policy}' on a CPU, but oneDNN is capped at {isa} "
            f"(ONEDNN_MAX_CPU_ISA, set by pipeline/__init__.py for reproducible numbers) and "
            f"{why}: use mixed_precision 'float32' on a CPU (mixed precision pays off on a GPU "
            "only), or run with ONEDNN_MAX_CPU_ISA=ALL (numbers then depend on the CPU)"
        )


def setup(cfg: TrainParams, seed: int) -> Any:
    """Seed, set precision and determinism, and create the strategy ``cfg`` asks for.

    Call it first in a training stage, before any other TensorFlow work (a multi-worker strategy
    must be created at program start-up). Returns a ``tf.distribute.Strategy``; build, load and
    compile models inside its ``scope()``.
    """
    config = read_tf_config()  # checked even when not used: a broken TF_CONFIG is a mistake
    import keras
    import tensorflow as tf

    seed_everything(seed, deterministic=cfg.deterministic_ops)
    gpus = tf.config.list_physical_devices("GPU")
    check_cpu_precision(cfg.mixed_precision, n_gpus=len(gpus))
    keras.mixed_precision.set_global_policy(cfg.mixed_precision)
    kind = resolve_distribution(cfg.distribution, len(gpus))
    if kind == "multi_worker":
        if config is None:
            raise PipelineError(
                "train.distribution is 'multi_worker' but TF_CONFIG is not set: set it on every "
                f"machine, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (see docs/distributed.md)"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        if n_workers(config) > 1:
            log.warning(
                "TF_CONFIG lists %d workers but train.distribution is %r: it is ignored and "
                "this process trains alone",
                n_workers(config),
                cfg.distribution,
            )
        strategy = (
            tf.distribute.MirroredStrategy() if kind == "mirrored" else tf.distribute.get_strategy()
        )
    log.info(
        "distribution: %s (%s), %d replica(s) in sync, %d GPU(s) visible here, precision %s, "
        "deterministic ops %s%s",
        kind,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        len(gpus),
        cfg.mixed_precision,
        "on" if cfg.deterministic_ops else "off",
        "" if is_chief(strategy) else "; this worker is not the chief and writes no outputs",
    )
    return strategy


def is_multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy``."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes the stage's outputs (always, unless multi-worker)."""
    if strategy is None or not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return is_chief_task(
        resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict() or None
    )


def global_batch_size(per_replica: int, strategy: Any = None) -> int:
    """Images per optimizer step: ``per_replica`` times the replicas in sync."""
    return per_replica * (strategy.num_replicas_in_sync if strategy is not None else 1)


def learning_rate(base: float, cfg: TrainParams, strategy: Any = None) -> float:
    """The learning rate of a phase: ``base``, times the replicas when scaling is ``linear``."""
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return base * replicas if cfg.learning_rate_scaling == "linear" else base


@contextlib.contextmanager
def output_dirs(strategy: Any, *targets: str | Path) -> Iterator[list[Path]]:
    """Folders to write the stage's output folders ``targets`` into.

    On the chief, :func:`pipeline.utils.atomic_dir` folders that replace ``targets`` when the
    block succeeds. On other workers, scratch folders outside the workspace, removed afterwards:
    they run the same code (saving may take part in collective ops) but leave nothing behind.
    """
    with contextlib.ExitStack() as stack:
        if is_chief(strategy):
            yield [stack.enter_context(atomic_dir(t)) for t in targets]
            return
        scratch = Path(tempfile.mkdtemp(prefix="pipeline-worker-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        dirs = [scratch / f"{i}-{Path(t).name}" for i, t in enumerate(targets)]
        for d in dirs:
            d.mkdir()
        yield dirs
