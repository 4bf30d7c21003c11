"""`workbench` command line: the GUI by default; run / eval / resume / runs / export / table /
presets.

Bad input exits with status 2 and one line naming the field and what is allowed; nothing in
the catalog is touched before the input has been checked.

Only what a command needs is imported: torch (about 2 s) for run / eval / resume, Qt for the
app; `--help`, `runs`, `export`, `table` and argument errors import neither.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from workbench.core.errors import CheckpointError, ConfigError, DataError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, CheckpointError)
INT64_MAX = 2**63 - 1  # SQLite integers, torch seeds: larger ones overflow deep inside
CHECKPOINT_NAMES = ("best", "final", "latest")


# the registered names, written out so `--help` stays fast (no torch import); a test checks
# them against the registries
BUILT_IN = {
    "algorithm": ["maml", "fomaml", "meta-sgd", "anil", "reptile", "meta-lstm", "protonet",
                  "matching", "relation", "pretrain-finetune"],
    "dataset": ["sinusoid", "glyphs", "omniglot", "image-folder", "cifar-fs", "fc100", "cub"],
}  # fmt: skip


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the catalog's CatalogError (not a catalog, newer version, read-only,
    damaged), imported only when a command ran: `workbench.catalog` loads SQLAlchemy and
    Alembic, which `--help` and argument errors do not need."""
    from workbench.catalog.errors import CatalogError
    from workbench.launcher import LaunchError

    return (*USER_ERRORS, CatalogError, LaunchError)


def one_line(text: str) -> str:
    """`text` as one printable line: user input echoed in a message may hold newlines or the
    surrogate escapes Python makes of undecodable argv bytes, which a UTF-8 stream refuses."""
    text = text.rstrip("\n").replace("\r", "\\r").replace("\n", "\\n")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(text: str, limit: int = 60) -> str:
    """repr() of an argument cut to `limit` characters, for error messages."""
    r = repr(text)
    return r if len(r) <= limit else f"{r[: limit - 5]}...{r[-2:]}"


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: a decimal integer in lo..hi (Python's ints are unbounded; SQLite's and
    torch's are not, so a 20-digit run id or seed would overflow far from the flag)."""

    def parse(text: str) -> int:
        digits = text.strip()
        try:  # ASCII digits only: int() also reads "١٢" and "1_000"
            if not (digits.isascii() and digits.lstrip("+-").isdigit()):
                raise ValueError(text)
            value = int(digits)  # ValueError past 4,300 digits
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {_shown(text)}") from None
        if not lo <= value <= hi:
            allowed = {INT64_MAX: "2**63-1", -INT64_MAX - 1: "-2**63"}
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is out of range: allowed"
                f" {allowed.get(lo, lo)}..{allowed.get(hi, hi)}"
            )
        return value

    parse.__name__ = "int"
    return parse


def text_arg(text: str) -> str:
    """argparse type: text that is valid UTF-8 with no control characters (undecodable bytes
    arrive as surrogate escapes, which SQLite and JSON cannot store)."""
    if any("\udc80" <= c <= "\udcff" for c in text):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not valid UTF-8 (undecodable bytes on the command line)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"{_shown(text)} holds control characters")
    return text


def name_arg(text: str) -> str:
    """argparse type: a non-empty name (an empty --algorithm would silently mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty value: give a name")
    return text_arg(text)


def db_arg(text: str) -> str:
    """argparse type: a catalog file name SQLite can open (UTF-8, not empty)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty file name")
    if any("\udc80" <= c <= "\udcff" for c in text):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not valid UTF-8 (SQLite needs a UTF-8 file name)"
        )
    return text


def checkpoint_arg(text: str) -> str:
    """argparse type: best, final, latest or a step number (0..2**63-1), checked here so that
    a 20-digit step cannot overflow the catalog's query."""
    if text in CHECKPOINT_NAMES:
        return text
    if text.isascii() and text.isdigit() and int(text) <= INT64_MAX:
        return str(int(text))
    raise argparse.ArgumentTypeError(
        f"{_shown(text)} is not allowed: use best, final, latest or a step number up to 2**63-1"
    )


def finite_float(text: str) -> float:
    """argparse type: a finite number (the config then checks its range and names the key)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {_shown(text)}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a finite number")
    return value


ANY_INT = int_in(-INT64_MAX - 1, INT64_MAX)  # the config names the key and its own range
RUN_ID = int_in(1, INT64_MAX)


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, one_line(f"{self.prog}: error: {message}") + "\n")


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ways", type=ANY_INT, help="classes per task (train and eval)")
    p.add_argument("--shots", type=ANY_INT, help="support examples per class (train and eval)")
    p.add_argument("--queries", type=ANY_INT, help="query examples per class (train and eval)")


def parser() -> Parser:
    top = Parser(
        prog="workbench",
        description="Meta-Learning Workbench: with no command, opens the desktop app.",
    )
    top.add_argument(
        "--db", type=db_arg, help="catalog file (default: $WORKBENCH_DB or ./experiments.db)"
    )
    sub = top.add_subparsers(dest="command", parser_class=Parser)

    g = sub.add_parser("gui", help="open the desktop app (the default)")
    g.add_argument("--db", dest="db_sub", type=db_arg)

    r = sub.add_parser("run", help="meta-train headless with a progress bar")
    r.add_argument(
        "--preset", type=name_arg, help="start from a paper preset (see `workbench presets`)"
    )
    r.add_argument("--config", help="run configuration JSON file")
    r.add_argument(
        "--algorithm",
        type=name_arg,
        help=f"{', '.join(BUILT_IN['algorithm'])}, or a plugin's",
    )
    r.add_argument(
        "--dataset", type=name_arg, help=f"{', '.join(BUILT_IN['dataset'])}, or a plugin's"
    )
    _add_task_flags(r)
    r.add_argument("--meta-batch", type=ANY_INT, help="tasks per meta-update")
    r.add_argument("--steps", type=ANY_INT, help="meta-training steps")
    r.add_argument("--device", type=name_arg, help="auto, cpu, cuda, cuda:N, mps")
    r.add_argument("--seed", type=int_in(-INT64_MAX - 1, INT64_MAX))
    r.add_argument("--threads", type=int_in(1, 512), help="torch CPU threads")
    r.add_argument("--data-dir", help="dataset folder (default: $WORKBENCH_DATA)")
    r.add_argument("--name", type=text_arg, help="run name")
    r.add_argument("--tag", type=text_arg, action="append", default=[], help="tag (repeatable)")
    r.add_argument(
        "--set",
        type=text_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. algorithm.inner_lr=0.4",
    )
    r.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--detach",
        action="store_true",
        help="train in its own process: print the run id and the log path, and return",
    )
    _add_nproc(r)
    r.add_argument("--db", dest="db_sub", type=db_arg)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on test episodes")
    e.add_argument("run_id", type=RUN_ID)
    e.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        default="best",
        help="best, final, latest or a step number",
    )
    e.add_argument(
        "--episodes", type=int_in(1, 100_000), help="test episodes (default: the run's, 600)"
    )
    _add_task_flags(e)
    e.add_argument("--inner-steps", type=int_in(0, 1000), help="adaptation steps at test")
    e.add_argument(
        "--inner-lr",
        type=finite_float,
        help="inner-loop step size at test (MAML, FOMAML, ANIL, fine-tuning; default: the run's)",
    )
    e.add_argument("--device", type=name_arg, default="cpu")
    e.add_argument("--db", dest="db_sub", type=db_arg)

    s = sub.add_parser("resume", help="continue a run from its latest (or an older) checkpoint")
    s.add_argument("run_id", type=RUN_ID)
    s.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        default="latest",
        help="latest or a step (an older one starts a child run)",
    )
    s.add_argument("--steps", type=int_in(1, INT64_MAX), help="new total step budget")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--detach", action="store_true", help="continue it in its own process")
    _add_nproc(s)
    s.add_argument("--db", dest="db_sub", type=db_arg)

    for name, what in (
        ("pause", "pause a live run after its current step (any process)"),
        ("stop", "stop a live run: stop checkpoint, then cancelled, as Ctrl-C"),
    ):
        c = sub.add_parser(name, help=what)
        c.add_argument("run_id", type=RUN_ID)
        c.add_argument("--db", dest="db_sub", type=db_arg)

    sw = sub.add_parser("sweep", help="grid, random or Optuna searches over run configurations")
    swsub = sw.add_subparsers(dest="sweep_command", parser_class=Parser, required=True)
    st = swsub.add_parser("start", help="run a sweep spec (JSON) to its budget")
    st.add_argument("spec", help="sweep spec JSON file")
    st.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: detached processes here; ray: Ray tasks (pip install '.[ray]')",
    )
    st.add_argument(
        "--address",
        help="with --executor ray: join the Ray cluster at auto or HOST:PORT (default: start "
        "Ray here); a cluster needs a PostgreSQL catalog",
    )
    st.add_argument("--max-concurrent", type=int_in(1, 256), help="trials at once")
    st.add_argument("--db", dest="db_sub", type=db_arg)
    sl = swsub.add_parser("list", help="the catalog's sweeps, newest first")
    sl.add_argument("--db", dest="db_sub", type=db_arg)
    for name, what in (
        ("show", "a sweep's trials, best first, and its best configuration as a run config"),
        ("resume", "continue a sweep whose driver stopped: adopt, resume, finish the budget"),
        ("cancel", "stop a sweep and its running trials (stop checkpoints)"),
    ):
        c = swsub.add_parser(name, help=what)
        c.add_argument("sweep_id", type=RUN_ID, metavar="SWEEP_ID")
        if name == "resume":
            c.add_argument("--max-concurrent", type=int_in(1, 256), help="trials at once")
            c.add_argument("--executor", choices=["local", "ray"], default="local")
            c.add_argument("--address", help="a Ray cluster to join (with --executor ray)")
        c.add_argument("--db", dest="db_sub", type=db_arg)

    lg = sub.add_parser("logs", help="print the output of a run started with --detach")
    lg.add_argument("run_id", type=RUN_ID)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    lg.add_argument("--db", dest="db_sub", type=db_arg)

    ls = sub.add_parser("runs", help="list runs as a table")
    ls.add_argument("--status", type=name_arg)
    ls.add_argument("--algorithm", type=name_arg)
    ls.add_argument("--dataset", type=name_arg)
    ls.add_argument("--tag", type=text_arg)
    ls.add_argument("--db", dest="db_sub", type=db_arg)

    x = sub.add_parser("export", help="export a run's metrics as CSV")
    x.add_argument("run_id", type=RUN_ID)
    x.add_argument(
        "--csv",
        help="output file (default: run-ID-NAME.csv here); columns "
        "run_id,run_name,step,metric,value,wall_time",
    )
    x.add_argument("--db", dest="db_sub", type=db_arg)

    tb = sub.add_parser("table", help="a results table of runs or seed groups (test mean ± CI)")
    tb.add_argument("run_ids", nargs="+", type=RUN_ID, metavar="RUN_ID")
    tb.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per seed group: mean over seeds, Student-t 95%% interval",
    )
    tb.add_argument(
        "--format",
        choices=("md", "latex", "csv"),
        help="md (default), latex (booktabs) or csv; from --out's suffix (.tex, .csv) if not given",
    )
    tb.add_argument("--out", metavar="FILE", help="write to this file instead of printing")
    tb.add_argument("--db", dest="db_sub", type=db_arg)

    sub.add_parser("presets", help="list the papers' presets and their published numbers")
    return top


# ---- config assembly ------------------------------------------------------------------
def build_config(args: argparse.Namespace) -> Any:
    """defaults < preset < --config file < flags < --set; every error is a ConfigError."""
    from workbench.core.config import RunConfig, apply_overrides, default_config, switch_algorithm
    from workbench.core.presets import get_preset

    if args.preset and args.config:
        raise ConfigError("--config", "give either --preset or --config, not both")
    if args.preset:
        data = get_preset(args.preset).run_config().to_dict()
    elif args.config is not None:
        data = RunConfig.from_json(_read_config(args.config), partial=True).to_dict()
    else:
        data = default_config(args.algorithm or "maml", args.dataset or "sinusoid").to_dict()
        args.algorithm = args.dataset = None
    if args.dataset and args.dataset != data["dataset"]["name"]:
        data["dataset"] = {"name": args.dataset}
    if args.algorithm:
        data["algorithm"] = switch_algorithm(data["algorithm"], args.algorithm)
    for phase in ("train", "eval"):
        for flag in ("ways", "shots", "queries"):
            if getattr(args, flag) is not None:
                data[phase][flag] = getattr(args, flag)
    if args.meta_batch is not None:
        data["train"]["meta_batch"] = args.meta_batch
    for flag in ("steps", "device", "seed", "threads", "name"):
        if getattr(args, flag) is not None:
            data[flag] = getattr(args, flag)
    if args.data_dir is not None:
        if not _is_dir(args.data_dir):
            raise ConfigError("--data-dir", f"{args.data_dir} is not a folder")
        data["dataset"]["data_dir"] = str(Path(args.data_dir).resolve())
    if args.tag:
        data["tags"] = [*data.get("tags", []), *args.tag]
    return RunConfig.from_dict(apply_overrides(data, args.set))


def _add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nproc",
        type=int_in(1, 1024),
        default=1,
        help="train on N processes of this machine (torch.distributed: gloo on CPU, NCCL on GPUs)",
    )


def _read_config(path: str) -> str:
    """The --config file's text; unreadable, a folder or not UTF-8 is a ConfigError."""
    if not path.strip():
        raise ConfigError("--config", "empty file name")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "--config", f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None


def _is_dir(path: str) -> bool:
    """Path.is_dir() that answers False for names the OS refuses (too long, for one)."""
    try:
        return bool(path) and Path(path).is_dir()
    except (OSError, ValueError):
        return False


# ---- listeners ------------------------------------------------------------------------
class ProgressBar:
    """tqdm progress bar listener for the terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.last_val = ""

    def on_start(self, e: Any) -> None:
        if not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=e.total_steps,
                initial=e.start_step,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def on_step(self, e: Any) -> None:
        if self.bar is not None:
            self.bar.update(e.step - self.bar.n)
            if e.step % 10 == 0:
                score = {
                    k: f"{v:.4g}" for k, v in e.values.items() if k in ("loss", "accuracy", "mse")
                }
                self.bar.set_postfix(
                    score | ({"val": self.last_val} if self.last_val else {}), refresh=False
                )

    def on_eval(self, e: Any) -> None:
        from workbench.exports import format_score

        self.last_val = format_score(e.mean, e.ci95, e.metric)
        if self.bar is not None and e.split == "test":
            self.bar.write(f"test {e.metric}: {self.last_val} ({e.episodes} episodes)")

    def on_checkpoint(self, e: Any) -> None: ...
    def on_checkpoint_removed(self, e: Any) -> None: ...
    def on_status(self, s: Any, reason: str | None = None) -> None:
        """A run that pauses itself (disk full, catalog busy) says why on stderr, quiet or not."""
        if reason:
            line = f"workbench: run {s}: {reason}"
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    def on_finish(self, e: Any) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _stopping(what: str, cancel: Callable[[], None], ranked: Any = None) -> Iterator[None]:
    """Ctrl-C / SIGTERM call `cancel` (a clean stop: checkpoints written) instead of killing.
    `ranked`: the Trainer of rank 0 of a multi-process run, which torchrun's SIGTERM aborts."""

    def stop(signum: int, _frame: Any) -> None:
        if ranked and signum == signal.SIGTERM:
            print("\nworkbench: SIGTERM from torchrun: ending this rank", file=sys.stderr)
            ranked.abort(TORCHRUN_ENDED)
            return
        print(f"\nworkbench: {signal.Signals(signum).name}: {what}", file=sys.stderr)
        cancel()

    old = {sg: signal.signal(sg, stop) for sg in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)


TORCHRUN_ENDED = (
    "torchrun ended the run's processes (SIGTERM): another rank failed or its launcher was stopped"
)


def _train(catalog: Any, trainer: Any, run_id: int) -> int:
    """Run with Ctrl-C / SIGTERM turned into a clean cancel (checkpoint written, run cancelled).
    Rank 0 of a multi-process run first hands the other ranks the configuration; there SIGTERM
    is torchrun ending the ranks (another one failed): the run ends failed, never cancelled."""
    group = trainer.group
    if group is not None:
        group.share(("train", trainer.config.to_json()))
        group.started = True
    try:
        with _stopping("stopping after this step", trainer.cancel, group is not None and trainer):
            result = trainer.run()
    finally:
        for listener in trainer.listeners:
            getattr(listener, "close", lambda: None)()
    print(f"run {run_id}: {result.status} at step {result.step}")
    if result.test is not None:
        t = result.test
        extra = "".join(
            f", {k} {v:.4f}"
            for k, v in t.values.items()
            if k.startswith("mse_after") and not k.endswith("ci95")
        )
        print(f"test {t.metric}: {_score(t)} over {t.episodes} episodes{extra}")
    if result.error:
        print(f"error: {result.error.splitlines()[0]}", file=sys.stderr)
    return {"finished": 0, "cancelled": 130}.get(result.status, 1)


# ---- commands -------------------------------------------------------------------------
def _score(s: Any) -> str:
    """A Score as scores are printed everywhere (`exports.format_score`)."""
    from workbench.exports import format_score

    return format_score(s.mean, s.ci95, s.metric)


def _db(args: argparse.Namespace) -> str | None:
    """The --db given after or before the command; a folder is refused before SQLite sees it."""
    db = getattr(args, "db_sub", None) or args.db
    if db is not None and _is_dir(db):
        raise ConfigError("--db", f"{db} is a folder; give the catalog file")
    return db


def _open_catalog(args: argparse.Namespace) -> Any:
    """The catalog, opened through workbench.catalog, which (unlike workbench.api) never
    imports torch: `runs` and `export` start in a fraction of a second."""
    from workbench.catalog import Catalog

    return Catalog.open(_db(args))


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.api import open_catalog, trainer_for
    from workbench.core.devices import resolve_device
    from workbench.core.engine import load_datasets

    config = build_config(args)
    if args.print_config:
        print(config.to_json())
        return 0
    group = getattr(args, "group", None)
    _check_world(config, group.world if group is not None else args.nproc)
    if args.detach:
        from workbench import launcher

        return _detached(launcher.spawn_config(config, _db(args), extra=_nproc_flag(args)))
    resolve_device(config.device)
    datasets = load_datasets(
        config, ("train", "val", "test")
    )  # fails before the catalog is touched
    if args.nproc > 1 and group is None:
        from workbench import ranks

        return ranks.launch(_without_nproc(args.argv), args.nproc, _db(args))
    catalog = open_catalog(_db(args))
    trainer, run_id = trainer_for(
        catalog, config, [ProgressBar(args.quiet)], datasets=datasets, group=group
    )
    _report(catalog, run_id, args.config)
    print(
        f"run {run_id}: {config.algorithm.name} on {config.dataset.name}, {config.steps} steps, db {catalog.display}"
    )
    return _train(catalog, trainer, run_id)


def _in_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _check_world(config: Any, world: int) -> None:
    """Every rank trains on at least one task of the meta-batch (`distributed.check_world`)."""
    from workbench.core.distributed import check_world

    check_world(config.train.meta_batch, world)


def _nproc_flag(args: argparse.Namespace) -> list[str]:
    return ["--nproc", str(args.nproc)] if args.nproc > 1 else []


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line the ranks run: this one without --nproc (they are the processes)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _ranked(args: argparse.Namespace, command: Callable[[argparse.Namespace], int]) -> int:
    """One rank of a multi-process run (torchrun's environment). Rank 0 runs the command: it
    alone opens the catalog, creates or resumes the run and writes checkpoints, then hands the
    configuration to the other ranks (`_train`); if it refuses the run, they end with it."""
    from workbench.core import distributed

    group = distributed.join(getattr(args, "device", None) or "auto")
    try:
        if group.rank != 0:
            rc = _other_rank(group, args)
        else:
            args.group = group
            rc = 2
            try:
                rc = command(args)
            finally:
                if not group.started:
                    group.share(("end", rc))
    finally:
        group.close()
    # a stopped run ended cleanly: torchrun takes any other status for a failed rank and
    # ends the others (the agent of `--nproc` reads the run's status from the catalog)
    return 0 if rc == 130 else rc


def _other_rank(group: Any, args: argparse.Namespace) -> int:
    """A rank other than 0: train with rank 0's configuration, no catalog, no checkpoints;
    pause and stop come from rank 0 with the steps."""
    from workbench.core.config import RunConfig
    from workbench.core.engine import Trainer, load_datasets

    what, value = group.share(None)
    if what == "end":
        return int(value)
    config = RunConfig.from_json(value)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when the run stops
    trainer = Trainer(config, [], datasets=load_datasets(config, ("train", "val", "test")),
                      group=group)  # fmt: skip
    result = trainer.run()
    print(f"rank {group.rank}: {result.status} at step {result.step}", file=sys.stderr)
    if result.error:
        print(f"rank {group.rank}: error: {result.error.splitlines()[0]}", file=sys.stderr)
    return {"finished": 0, "cancelled": 130}.get(result.status, 1)


def _report(catalog: Any, run_id: int, config_file: str | None = None) -> None:
    """In a process `--detach` launched: tell the launcher the run exists (else nothing)."""
    from workbench.launcher import report_run

    report_run(catalog, run_id, config_file)


def _detached(pending: Any) -> int:
    """Wait for a detached run's process to create its run; say where it trains."""
    done = pending.wait()
    print(f"run {done.run_id}: training in process {done.pid}; log {done.log_path}")
    print(f"follow it with: workbench logs {done.run_id} --follow")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from workbench.api import open_catalog, resolve_checkpoint, run_config, trainer_for
    from workbench.core.checkpoint import load_checkpoint
    from workbench.core.config import RunConfig

    catalog = open_catalog(_db(args))
    _known_run(catalog, args.run_id)
    if catalog.get_run(args.run_id).status == "paused" and _live(catalog, args.run_id):
        catalog.request(args.run_id, "resume")  # a paused live run: its owner continues it
        print(f"run {args.run_id}: resume requested (its process continues it)")
        return 0
    catalog.ensure_free(args.run_id)  # owned by a live process: one line, before anything
    group = getattr(args, "group", None)
    if args.nproc > 1 or group is not None:
        _check_world(run_config(catalog, args.run_id), group.world if group else args.nproc)
    if args.detach:
        from workbench import launcher

        catalog.close()
        return _detached(
            launcher.spawn_resume(args.run_id, _db(args), args.checkpoint, args.steps, args.nproc)
        )
    if args.nproc > 1 and group is None:
        from workbench import ranks

        catalog.close()
        return ranks.launch(_without_nproc(args.argv), args.nproc, _db(args))
    if args.checkpoint == "latest" and catalog.checkpoint(args.run_id, "latest") is None:
        return _restart(catalog, args)  # killed before its first checkpoint: from step 0
    rec = resolve_checkpoint(catalog, args.run_id, args.checkpoint)
    state = load_checkpoint(
        rec.path, rec.sha256
    )  # tampered or unreadable: exit 2 before anything changes
    config = RunConfig.from_json(str(state["config_json"]))
    if args.steps is not None:
        if args.steps <= rec.step:
            raise ConfigError(
                "--steps",
                f"{args.steps} is not allowed: must exceed the checkpoint's step {rec.step}",
            )
        config = RunConfig.from_dict({**config.to_dict(), "steps": args.steps})
    elif rec.step >= config.steps:
        raise ConfigError(
            "--steps",
            f"the run already reached its budget of {config.steps} steps; pass a larger --steps",
        )
    trainer, run_id = trainer_for(
        catalog, config, [ProgressBar(args.quiet)], run_id=args.run_id, resume=rec,
        group=getattr(args, "group", None),
    )  # fmt: skip
    _report(catalog, run_id)
    print(
        f"run {run_id}: resuming from step {rec.step} ({rec.kind} checkpoint){' as a child of run ' + str(args.run_id) if run_id != args.run_id else ''}"
    )
    return _train(catalog, trainer, run_id)


def _restart(catalog: Any, args: argparse.Namespace) -> int:
    """Resume a run that has no checkpoint: a new attempt from step 0 (its earlier points are
    kept, superseded)."""
    from workbench.api import trainer_for
    from workbench.core.config import RunConfig

    record = catalog.get_run(args.run_id)
    if record.status not in ("interrupted", "failed", "cancelled"):
        raise ConfigError("--checkpoint", f"run {args.run_id} has no checkpoint to resume from")
    config = RunConfig.from_json(record.config_json)
    if args.steps is not None:
        config = RunConfig.from_dict({**config.to_dict(), "steps": args.steps})
    trainer, run_id = trainer_for(
        catalog, config, [ProgressBar(args.quiet)], run_id=args.run_id,
        group=getattr(args, "group", None),
    )  # fmt: skip
    _report(catalog, run_id)
    print(f"run {run_id}: it has no checkpoint; starting it again from step 0")
    return _train(catalog, trainer, run_id)


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.api import evaluate_checkpoint, open_catalog

    catalog = open_catalog(_db(args))
    _known_run(catalog, args.run_id)
    shape = {
        k: getattr(args, k)
        for k in ("ways", "shots", "queries", "inner_steps")
        if getattr(args, k) is not None
    }
    score = evaluate_checkpoint(
        catalog, args.run_id, args.checkpoint, args.episodes, shape, args.device,
        inner_lr=args.inner_lr,
    )  # fmt: skip
    print(
        f"run {args.run_id} ({args.checkpoint}): test {score.metric} {_score(score)} "
        f"over {score.episodes} episodes{_extra_values(score.values)}"
    )
    return 0


def _extra_values(values: dict[str, float]) -> str:
    """A score's further values (`mse_after_5`, `k5_mse_after_10`...) as `, name mean ± CI`,
    written by `exports.format_score` like the score itself."""
    from workbench.exports import format_score

    shown = [k for k in values if not k.endswith(("_ci95", "_median"))]
    return "".join(f", {k} {format_score(values[k], values.get(f'{k}_ci95'), k)}" for k in shown)


def _live(catalog: Any, run_id: int) -> bool:
    return any(r.id == run_id for r in catalog.live_runs())


def cmd_control(args: argparse.Namespace) -> int:
    """`pause` / `stop`: a request through the catalog, taken by the run's owner between
    steps (whichever process or machine trains it)."""
    catalog = _open_catalog(args)
    _known_run(catalog, args.run_id)
    catalog.request(args.run_id, args.command)
    print(f"run {args.run_id}: {args.command} requested (taken after the current step)")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a detached run's log; with --follow keep printing until the run is no longer
    live (finished, failed, cancelled, interrupted)."""
    catalog = _open_catalog(args)
    _known_run(catalog, args.run_id)
    path = catalog.log_path(args.run_id)
    if not path.exists():
        raise ConfigError(
            "RUN_ID", f"run {args.run_id} has no log ({path}): it was not started with --detach"
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            text = f.read()
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
            if not args.follow:
                return 0
            if not _live(catalog, args.run_id):
                sys.stdout.write(f.read())
                record = catalog.get_run(args.run_id)
                print(f"run {args.run_id}: {record.status} at step {record.step}")
                return 0
            time.sleep(0.5)


def cmd_sweep(args: argparse.Namespace) -> int:
    """`sweep start|resume`: trials as detached runs, a line each time one changes, the best
    configuration at the end; Ctrl-C stops the running trials cleanly (stop checkpoints).
    `sweep list|show|cancel` read or ask through the catalog."""
    if args.sweep_command == "list":
        return _sweep_list(args)
    if args.sweep_command == "show":
        return _sweep_show(args)
    if args.sweep_command == "cancel":
        return _sweep_cancel(args)
    from workbench.sweeps.driver import LocalExecutor, SweepDriver
    from workbench.sweeps.spec import load_spec

    catalog = _open_catalog(args)
    catalog.check_checkpoint_folder()
    executor: Any = LocalExecutor(_db(args) or catalog.location)
    if getattr(args, "address", None) and args.executor != "ray":
        raise ConfigError("--address", "only with --executor ray")
    if getattr(args, "executor", "local") == "ray":
        from workbench.sweeps.ray_executor import RayExecutor

        executor = RayExecutor(catalog, args.address, db=_db(args) or catalog.location)
        try:  # Ray that cannot start or be joined: one line, exit 2, before any trial
            executor.connect()
        except RuntimeError as exc:
            raise ConfigError("--executor", str(exc)) from None

    def show(t: Any) -> None:
        params = _params_text(t.point)
        run = f"run {t.run_id} " if t.run_id is not None else ""
        value = "" if t.objective is None else f" {driver.metric} {t.objective:.4f}"
        print(
            f"trial {t.number} seed {t.seed}: {run} {t.status}{value}  {params}".rstrip(),
            flush=True,
        )

    if args.sweep_command == "resume":
        _known_sweep(catalog, args.sweep_id)
        driver = SweepDriver.resume(catalog, args.sweep_id, executor, on_change=show)
        if args.max_concurrent:
            driver.spec = driver.spec.model_copy(update={"max_concurrent": args.max_concurrent})
        spec = driver.spec
        over = sum(t.status not in ("starting", "running") for t in driver.result.trials)
        print(
            f"sweep {driver.sweep_id}: resumed, {over} trials over, {len(driver._active)} adopted"
        )
    else:
        spec = load_spec(args.spec)
        if args.max_concurrent:
            spec = spec.model_copy(update={"max_concurrent": args.max_concurrent})
        driver = SweepDriver(catalog, spec, executor, on_change=show)
        print(f"sweep {driver.sweep_id}: {spec.method}, {driver.metric} "
              f"({'max' if driver.maximize else 'min'}imized)", flush=True)  # fmt: skip
    if spec.reproducible_note:
        print(f"note: {spec.reproducible_note}")

    with _stopping("stopping the running trials", driver.cancel):
        result = driver.run()
    best = result.best(driver.maximize)
    done = sum(t.status == "finished" for t in result.trials)
    print(
        f"sweep: {done} of {len(result.trials)} trials finished{' (cancelled)' if result.cancelled else ''}"
    )
    if best is not None:
        from workbench.sweeps.spec import config_for

        print(
            f"best: trial {best.number} seed {best.seed} (run {best.run_id}), {driver.metric} {best.objective:.4f}"
        )
        print(config_for(driver.base, best.point, best.seed).to_json())
    return 130 if result.cancelled else 0


def _known_sweep(catalog: Any, sweep_id: int) -> Any:
    from workbench.catalog.sweep_store import UnknownSweepError

    try:
        return catalog.sweeps.get(sweep_id)
    except UnknownSweepError:
        raise ConfigError("SWEEP_ID", f"no sweep {sweep_id} in {catalog.display}") from None


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _sweep_list(args: argparse.Namespace) -> int:
    with _open_catalog(args) as catalog:
        sweeps = catalog.sweeps.list()
        where = catalog.display
    if not sweeps:
        print(f"(no sweeps in {where})")
        return 0
    rows = [("id", "name", "method", "status", "trials", "objective", "best", "created")]
    for sw in sweeps:
        rows.append((
            str(sw.id), sw.name[:24], sw.method, sw.status, f"{sw.done}/{sw.trials}",
            f"{sw.metric} ({'max' if sw.maximize else 'min'})", _fmt(sw.best, False),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(sw.created_at)),
        ))  # fmt: skip
    _table(rows)
    return 0


def _sweep_show(args: argparse.Namespace) -> int:
    from workbench.sweeps.spec import config_for

    with _open_catalog(args) as catalog:
        sw = _known_sweep(catalog, args.sweep_id)
        trials = catalog.sweeps.trials(args.sweep_id)
    print(f"sweep {sw.id} {sw.name!r}: {sw.method}, {sw.status}, {sw.done} of {sw.trials} "
          f"trials finished, {sw.metric} {'max' if sw.maximize else 'min'}imized")  # fmt: skip
    sign = -1.0 if sw.maximize else 1.0
    ranked = sorted(
        trials,
        key=lambda t: (t.objective is None, sign * (t.objective or 0.0), t.number, t.seed),
    )
    rows = [("trial", "seed", "run", "status", sw.metric, "parameters")]
    for t in ranked:
        rows.append((
            str(t.number), str(t.seed), "-" if t.run_id is None else str(t.run_id), t.status,
            _fmt(t.objective, False), _params_text(t.params),
        ))  # fmt: skip
    if trials:
        _table(rows)
    best = ranked[0] if ranked and ranked[0].objective is not None else None
    if best is not None:
        print(f"best: trial {best.number} seed {best.seed} (run {best.run_id}), "
              f"{sw.metric} {best.objective:.4f}")  # fmt: skip
        print(config_for(sw.spec["base"], best.params, best.seed).to_json())
    return 0


def _sweep_cancel(args: argparse.Namespace) -> int:
    from workbench.catalog.errors import NotRunningError

    with _open_catalog(args) as catalog:
        _known_sweep(catalog, args.sweep_id)
        if catalog.sweeps.request_cancel(args.sweep_id):
            print(f"sweep {args.sweep_id}: cancel asked of its driver (it stops its trials)")
            return 0
        stopped = []
        for t in catalog.sweeps.trials(args.sweep_id):
            if t.run_id is None or t.status not in ("starting", "running"):
                continue
            try:
                catalog.request(t.run_id, "stop")
                stopped.append(t.run_id)
            except NotRunningError:
                pass
            catalog.sweeps.update_trial(t.id, status="cancelled")
    what = (
        f"asked runs {', '.join(map(str, stopped))} to stop" if stopped else "no trial was running"
    )
    print(f"sweep {args.sweep_id}: cancelled (its driver was gone); {what}")
    return 0


def _known_run(catalog: Any, run_id: int) -> None:
    if not catalog.has_run(run_id):
        raise ConfigError("RUN_ID", f"no run {run_id} in {catalog.display}")


def _fmt(v: float | None, pct: bool) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v:.4g}"


def cmd_runs(args: argparse.Namespace) -> int:
    from workbench.core.events import STATUSES
    from workbench.exports import format_score

    if args.status is not None and args.status not in STATUSES:
        raise ConfigError(
            "--status", f"{_shown(args.status)} is not allowed; allowed: {', '.join(STATUSES)}"
        )
    with _open_catalog(args) as catalog:
        runs = catalog.list_runs(
            status=args.status, algorithm=args.algorithm, dataset=args.dataset, tag=args.tag
        )
        path = catalog.display
    rows = [
        (
            "id",
            "name",
            "status",
            "algorithm",
            "dataset",
            "step",
            "best val",
            "test ± ci95",
            "created",
        )
    ]
    for r in runs:
        summ = r.summary
        metric = "accuracy" if any(k.endswith("accuracy") for k in summ) else "mse"
        val = summ.get(f"val_{metric}")
        test = summ.get(f"test_{metric}")
        test_ci = summ.get(f"test_{metric}_ci95")
        test_s = format_score(
            test.latest if test else None, test_ci.latest if test_ci else None, metric
        )
        rows.append((
            str(r.id), r.name[:24], r.status, r.algorithm, r.dataset, f"{r.step}/{r.total_steps or '?'}",
            format_score(val.best if val else None, None, metric), test_s,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
        ))  # fmt: skip
    _table(rows)
    if not runs:
        print(f"(no runs in {path})")
    return 0


def _out_file(flag: str, text: str | None) -> Path | None:
    """An output file named by `flag`, checked before the catalog is opened: not empty, not a
    folder, in a folder that exists."""
    if text is None:
        return None
    if not text.strip():
        raise ConfigError(flag, "empty file name")
    out = Path(text)
    if _is_dir(text):
        raise ConfigError(flag, f"{text} is a folder; give a file name")
    if not _is_dir(str(out.parent)):
        raise ConfigError(flag, f"folder {out.parent} does not exist")
    return out


@contextlib.contextmanager
def _writing(flag: str, path: Path | str) -> Iterator[None]:
    """An OSError while writing `flag`'s file is one line naming the flag."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(flag, f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_export(args: argparse.Namespace) -> int:
    """Every stored point of the run's current attempt, by metric then step, with the columns
    of `exports.METRIC_COLUMNS`; without --csv the file is named after the run."""
    from workbench import exports

    out = _out_file("--csv", args.csv)
    with _open_catalog(args) as catalog:
        run = exports.known_run(catalog, args.run_id)
        path = out or Path(exports.metrics_csv_name(run))
        with _writing("--csv", path):
            path, n = exports.write_metrics_csv(catalog, args.run_id, path)
    print(f"wrote {n} points to {path}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """Test score per run (mean ± 95% CI over its episodes) or per seed group (mean over seeds
    ± Student-t 95% interval) as Markdown, LaTeX or CSV, printed or written to --out."""
    from workbench import exports

    out = _out_file("--out", args.out)
    suffix = out.suffix.lower() if out is not None else ""
    fmt = args.format or {".tex": "latex", ".csv": "csv"}.get(suffix, "md")
    with _open_catalog(args) as catalog:
        rows = exports.results(catalog, args.run_ids, args.group_seeds)
    text = exports.results_table(rows, fmt)
    if out is None:
        sys.stdout.write(text)
        return 0
    with _writing("--out", out):
        out.write_text(text, encoding="utf-8", newline="")
    print(f"wrote {len(rows)} rows ({fmt}) to {out}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from workbench.core.presets import load_presets

    for p in load_presets().values():
        print(f"{p.name}\n    {p.title}\n    published: {p.published}")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from workbench.gui.app import main as gui_main
    except ImportError as exc:
        print(
            f"workbench: the desktop app cannot start ({exc}); headless commands: workbench run --help",
            file=sys.stderr,
        )
        return 1
    db = _db(args)
    return gui_main(["--db", db] if db else [])


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_gui, "gui": cmd_gui, "run": cmd_run, "resume": cmd_resume, "eval": cmd_eval,
    "runs": cmd_runs, "export": cmd_export, "table": cmd_table, "presets": cmd_presets,
    "pause": cmd_control, "stop": cmd_control, "logs": cmd_logs, "sweep": cmd_sweep,
}  # fmt: skip


def _threads_from_env(args: argparse.Namespace) -> None:
    """--threads from $WORKBENCH_THREADS when the flag is not given (commands that train)."""
    text = os.environ.get("WORKBENCH_THREADS")
    if hasattr(args, "threads") and args.threads is None and text:
        try:
            args.threads = int_in(1, 512)(text)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError("WORKBENCH_THREADS", str(exc)) from None


def _quiet_stdout() -> None:
    """After a broken pipe (`workbench runs | head -1`), point stdout at /dev/null so that the
    interpreter's final flush does not fail again (the recipe in Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2: bad input, one line on stderr)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argument error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 0
    args.argv = list(sys.argv[1:] if argv is None else argv)
    rc = _main(args)
    if args.command in ("run", "resume") and _in_torchrun() and argv is None:
        # a rank ends here, its records written and its process group left: the C++ threads
        # of torch.distributed can abort an interpreter's normal exit ("terminate called
        # without an active exception", SIGABRT), which torchrun takes for a failed rank
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(args: argparse.Namespace) -> int:
    try:
        _threads_from_env(args)
        if args.command in ("run", "resume") and _in_torchrun():
            rc = _ranked(args, COMMANDS[args.command])
        else:
            rc = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except user_errors() as exc:
        print(one_line(f"workbench {args.command or 'gui'}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
