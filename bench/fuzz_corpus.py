"""A corpus of invalid `workbench` invocations, each of which must exit with status 2, one line
on stderr and no run in the catalog.

Generated from a table (each flag x values that are wrong for it), so that a new flag gets
fuzzed by adding one row; used by tests/test_cli_fuzz.py (in-process, through
`workbench.cli.main`) and meant for bench/faults.py. Imports nothing from workbench, so that a
broken package still yields its corpus.
"""

from __future__ import annotations

import os
from pathlib import Path

UNDECODABLE = os.fsdecode(b"\xff")  # what Python makes of a byte that is not UTF-8 in argv
LONG = "x" * 10_000
HUGE = "9" * 30  # beyond 64 bits
HUGER = "9" * 5_000  # beyond Python's 4,300-digit int() limit
NOT_INTEGERS = ["", "abc", "nan", "inf", "1e400", "1.5", "0x10", "١٢", UNDECODABLE, LONG, HUGER]

# run's integer flags: values that are not integers, out of the flag's range, or overflow
RUN_INT_FLAGS: dict[str, list[str]] = {
    "--ways": ["-1", "0", "5001", HUGE],
    "--shots": ["-1", "0", "1001", HUGE],
    "--queries": ["-1", "0", "1001", HUGE],
    "--meta-batch": ["-1", "0", "1025", HUGE],
    "--steps": ["-1", "0", "10000001", HUGE],
    "--seed": ["-" + HUGE, HUGE, str(2**63), str(-(2**63) - 1)],
    "--threads": ["-1", "0", "513", HUGE],
}
# run's text flags: values that name nothing that exists, or are not text at all
RUN_TEXT_FLAGS: dict[str, list[str]] = {
    "--algorithm": ["", "abc", "maml\n", UNDECODABLE, LONG],
    "--dataset": ["", "abc", "glyphs\t", UNDECODABLE, LONG],
    "--device": ["", "abc", "cuda:99", UNDECODABLE, LONG],
    "--preset": ["", "abc", UNDECODABLE, LONG],
    "--name": ["a\nb", UNDECODABLE, "a" + UNDECODABLE, LONG],
    "--tag": ["", "a\x1bb", UNDECODABLE, LONG],
}
# --set: malformed assignments, unknown keys, values of the wrong type, nonsense numbers
BAD_SETS: list[str] = [
    "nonsense", "=1", " =1", "no_such_key=1", "algorithm.no_such_key=1", "a.b.c=1",
    "train.no_such=1", "steps.x=1", "steps=abc", "steps=[", "steps={", "steps=1.5",
    "steps=true", "steps=null", "steps=1e400", "steps=" + HUGE, "steps=" + HUGER,
    "seed=-" + HUGE, "seed=" + HUGE, "seed=1e30", "dataset.split_seed=-1",
    "model.hidden=[-5]", "model.hidden=[0]", "model.hidden=[40, 0]", "model.hidden=5",
    "model.hidden=[true]", "model.hidden=[1e400]", "model.width=0", "model.width=-1",
    "model.name=abc", "dataset.channels=0", "dataset.channels=-3", "dataset.channels=2",
    "dataset.channels=true", "dataset.image_size=0", "train.ways=0", "train.shots=0",
    "train.shots=true", "train.queries=0", "train.meta_batch=0", "eval.queries=-1",
    "train.inner_steps=-1", "eval.inner_steps=-1", "algorithm.meta_lr=nan",
    "algorithm.meta_lr=NaN", "algorithm.meta_lr=inf", "algorithm.meta_lr=Infinity",
    "algorithm.meta_lr=-1", "algorithm.meta_lr=0", "algorithm.inner_lr=-0.1",
    "algorithm.inner_lr=-Infinity", "algorithm.grad_clip=nan", "algorithm.lr_halve_every=-1",
    "algorithm.name=nope", "algorithm=5", "dataset=5", "val_episodes=0", "test_episodes=0",
    "keep_last=-1", "threads=0", "tags=abc", "tags=[1]", 'tags=[""]', "tags=" + "[" * 5_000,
    "tags=" + "[" * 500 + "]" * 500, "name=" + "n" * 300, "precision=fp8",
    "unknown=" + UNDECODABLE, UNDECODABLE + "=1", "dataset.name=" + LONG,
]  # fmt: skip
# shapes the glyphs dataset cannot serve: classes need 2 ways, each class has 20 images
BAD_GLYPH_SHAPES: list[list[str]] = [
    ["--ways", "1"],
    ["--set", "train.ways=1"],
    ["--set", "eval.ways=1"],
    ["--ways", "1000"],
    ["--set", "eval.queries=30"],
    ["--shots", "10", "--queries", "15"],
    ["--set", "train.queries=20"],
    ["--algorithm", "protonet", "--dataset", "sinusoid"],
]
RUN_ID_VALUES = ["-1", "0", HUGE, str(2**63), *NOT_INTEGERS]
CHECKPOINT_VALUES = ["", "abc", "-1", "1.5", HUGE, "١٢", UNDECODABLE, LONG]


def _config_files(folder: Path) -> dict[str, Path]:
    """Bad --config files, written into `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "not-utf8.json": b'\xff\xfe{"steps": 1}',
        "latin1.json": '{"name": "caf\xe9"}'.encode("latin-1"),
        "deep.json": b"[" * 100_000,
        "deep-object.json": b'{"tags": ' + b"[" * 100_000 + b"}",
        "not-json.json": b"steps: 1",
        "empty.json": b"",
        "list.json": b"[1, 2]",
        "unknown-key.json": b'{"algorithm": {"name": "maml"}, "no_such_key": 1}',
        "nan-lr.json": b'{"algorithm": {"name": "maml", "meta_lr": NaN}}',
        "huge-int.json": b'{"algorithm": {"name": "maml"}, "seed": ' + HUGER.encode() + b"}",
        "hidden-negative.json": b'{"algorithm": {"name": "maml"}, "model": {"hidden": [-5]}}',
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    (folder / "a-folder").mkdir(exist_ok=True)
    out["a-folder"] = folder / "a-folder"
    return out


def invalid_invocations(db_path: str | os.PathLike[str]) -> list[list[str]]:
    """argv lists (without the program name) that must each be refused with exit status 2;
    helper files (bad --config files, a plain file for --data-dir) are written beside
    `db_path`, which must not exist yet or hold no runs. None of them would start training if
    accepted with the defaults, apart from the flag under test."""
    db = Path(db_path)
    folder = db.parent / "fuzz-files"
    configs = _config_files(folder)
    plain_file = folder / "plain.txt"
    plain_file.write_text("not a folder\n", encoding="utf-8")
    run = ["--db", str(db), "run", "--quiet"]
    cases: list[list[str]] = []

    for flag, values in RUN_INT_FLAGS.items():
        cases += [[*run, flag, v] for v in [*values, *NOT_INTEGERS]]
    for flag, values in RUN_TEXT_FLAGS.items():
        cases += [[*run, flag, v] for v in values]
    cases += [[*run, "--set", s] for s in BAD_SETS]
    cases += [[*run, "--dataset", "glyphs", *shape] for shape in BAD_GLYPH_SHAPES]
    cases += [[*run, "--config", str(p)] for p in configs.values()]
    cases += [
        [*run, "--config", ""],
        [*run, "--config", str(folder / "missing.json")],
        [*run, "--config", str(folder / UNDECODABLE)],
        [*run, "--config", str(folder / LONG)],
        [*run, "--preset", "maml-sinusoid", "--config", str(configs["list.json"])],
        [*run, "--data-dir", ""],
        [*run, "--data-dir", str(folder / "missing")],
        [*run, "--data-dir", str(plain_file)],
        [*run, "--data-dir", str(folder / UNDECODABLE)],
        [*run, "--data-dir", str(folder / LONG)],
        [*run, "--set"],
        [*run, "--steps"],
        [*run, "--no-such-flag"],
        [*run, "positional"],
    ]

    for cmd in ("eval", "resume", "export"):
        tail = ["--csv", str(folder / "out.csv")] if cmd == "export" else []
        cases += [["--db", str(db), cmd, v, *tail] for v in RUN_ID_VALUES]
        cases.append(["--db", str(db), cmd, "1", *tail])  # no such run
    for cmd in ("eval", "resume"):
        cases += [["--db", str(db), cmd, "1", "--checkpoint", v] for v in CHECKPOINT_VALUES]
    eval_flags = {"--episodes": ["0", "-1", "100001"], "--inner-steps": ["-1", "1001"]}
    for flag in ("--ways", "--shots", "--queries"):
        eval_flags[flag] = [HUGE]
    for flag, values in eval_flags.items():
        cases += [["--db", str(db), "eval", "1", flag, v] for v in [*values, "", "abc", HUGER]]
    cases += [["--db", str(db), "eval", "1", "--device", v] for v in ("", UNDECODABLE)]
    cases += [["--db", str(db), "resume", "1", "--steps", v] for v in ("0", "-1", HUGE, "abc")]
    csv_values = ["", str(folder), str(folder / "missing" / "x.csv"), str(folder / LONG)]
    cases += [["--db", str(db), "export", "1", "--csv", v] for v in csv_values]
    cases.append(["--db", str(db), "export", "1"])  # --csv is required

    for flag in ("--status", "--algorithm", "--dataset", "--tag"):
        cases.append(["--db", str(db), "runs", flag, UNDECODABLE])
    cases += [["--db", str(db), "runs", "--status", v] for v in ("", "abc", LONG)]
    cases += [
        ["--db", "", "runs"],
        ["--db", str(folder), "runs"],
        ["--db", str(db.parent / UNDECODABLE), "runs"],
        ["--db", str(db), "nope"],
        ["--db", str(db), "--no-such-flag"],
        ["--db", str(db), "presets", "extra"],
    ]
    return cases
