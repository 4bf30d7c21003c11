"""The run form never starts a wrong run: switching algorithm or dataset restores that pair's
defaults (the CLI's), a MAML-family run without an inner loop and a task shape the dataset
cannot supply are refused before a run exists, and unreadable input is named in words."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from workbench.catalog import Catalog  # noqa: E402
from workbench.cli import build_config, parser  # noqa: E402
from workbench.core.algorithms import ALGORITHMS  # noqa: E402
from workbench.core.config import default_config  # noqa: E402
from workbench.core.errors import ConfigError  # noqa: E402
from workbench.core.tasks import DATASETS  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402
from workbench.gui.run_form import RunForm  # noqa: E402

NO_DATA = [d for d in DATASETS.names() if not DATASETS.get(d).needs_data_dir]
PAIRS = [
    (a, d)
    for a in ALGORITHMS.names()
    for d in NO_DATA
    if DATASETS.get(d).kind in ALGORITHMS.get(a).supports
]


@pytest.fixture
def form(qtbot) -> RunForm:
    f = RunForm(presets=[])
    qtbot.addWidget(f)
    return f


@pytest.fixture
def window(qtbot, tmp_path: Path):
    cat = Catalog.open(tmp_path / "runs.db")
    win = MainWindow(cat, restore=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()
    cat.close()


def choose(form: RunForm, algorithm: str, dataset: str) -> None:
    """As a user does: the algorithm combo, then the dataset combo."""
    form.editors["algorithm.name"].set_value(algorithm)
    form.editors["dataset.name"].set_value(dataset)


def cli_default(*flags: str) -> dict:
    return build_config(parser().parse_args(["run", *flags])).to_dict()


def test_launch_default_is_the_cli_default(form: RunForm) -> None:
    assert form.valid, form.error_label.text()
    got = form.config.to_dict()
    want = cli_default()
    assert got == want
    # the budget the issue found different: validation, checkpoints and test episodes
    assert (got["val_episodes"], got["ckpt_every"], got["test_episodes"]) == (100, 500, 600)


@pytest.mark.parametrize(("algorithm", "dataset"), PAIRS)
def test_form_default_equals_cli_default_for_every_pair(
    form: RunForm, algorithm: str, dataset: str
) -> None:
    choose(form, algorithm, dataset)
    assert form.valid, form.error_label.text()
    want = cli_default("--algorithm", algorithm, "--dataset", dataset)
    assert form.config.to_dict() == want
    assert want == default_config(algorithm, dataset).to_dict()


@pytest.mark.parametrize("algorithm_first", [True, False])
def test_switching_protonet_glyphs_back_to_maml_sinusoid_restores_maml_defaults(
    qtbot, window: MainWindow, algorithm_first: bool
) -> None:
    """The issue: back on MAML/sinusoid the form kept 5 ways, 15 queries, meta-batch 1 and
    0 inner steps with inner LR 0.4, Start stayed enabled, and the run had no inner loop."""
    form = window.form
    form.set_field("steps", 3000)  # set on purpose: survives the switches
    choose(form, "protonet", "glyphs")
    assert form.valid, form.error_label.text()
    assert form.config.train.meta_batch == 1 and form.config.train.inner_steps == 0
    notices_before = len(window.log.entries)
    if algorithm_first:
        choose(form, "maml", "sinusoid")
    else:  # ProtoNet on sinusoid cannot run: nothing is reset until MAML is chosen
        form.editors["dataset.name"].set_value("sinusoid")
        assert not form.valid and not window.start_button.isEnabled()
        form.editors["algorithm.name"].set_value("maml")
    assert form.valid and window.start_button.isEnabled()
    got = form.config.to_dict()
    want = {**default_config("maml", "sinusoid").to_dict(), "steps": 3000}
    assert got == want
    train = got["train"]
    assert (train["ways"], train["queries"], train["meta_batch"], train["inner_steps"]) == (
        1, 10, 25, 1,
    )  # fmt: skip
    assert got["algorithm"]["inner_lr"] == 0.01
    # what was reset is said, in the form's notice line and in the log
    notice = form.notice_label.text()
    assert form.notice_label.isVisibleTo(form)
    assert notice.startswith("maml on sinusoid: reset to its defaults:"), notice
    assert "train.ways 5 → 1" in notice
    if algorithm_first:  # MAML on glyphs had its own inner LR; ProtoNet has none to reset
        assert "algorithm.inner_lr 0.4 → 0.01" in notice
    assert notice.endswith("kept what you set: steps 3000")
    logged = " ".join(m for _, m in window.log.entries[notices_before:])
    assert "train.inner_steps 0 → 1" in logged and "train.meta_batch 1 → " in logged
    form.grab().save("/tmp/form_after_switch.png")


def test_values_set_on_purpose_are_kept_only_while_they_fit(form: RunForm) -> None:
    choose(form, "protonet", "glyphs")
    form.set_field("train.ways", 20)
    form.set_field("eval.ways", 20)
    form.set_field("algorithm.meta_lr", 0.002)
    choose(form, "maml", "glyphs")  # same kind of task: a 20-way shape still fits
    cfg = form.config
    assert cfg is not None and (cfg.train.ways, cfg.eval.ways) == (20, 20)
    assert cfg.algorithm.meta_lr == 0.002 and cfg.train.inner_steps == 1
    assert "kept what you set" in form.notice_label.text()
    form.editors["dataset.name"].set_value("sinusoid")  # regression: image shapes do not fit
    cfg = form.config
    assert cfg is not None and (cfg.train.ways, cfg.train.shots) == (1, 10)
    assert cfg.algorithm.meta_lr == 0.002 and cfg.algorithm.inner_lr == 0.01


def test_a_kept_value_the_new_pair_rejects_is_reset(form: RunForm) -> None:
    choose(form, "protonet", "glyphs")
    form.set_field("train.ways", 60)  # ProtoNet trains with more ways than it tests
    assert form.valid
    form.editors["algorithm.name"].set_value("maml")  # its output layer needs eval ways = train
    assert form.valid, form.error_label.text()
    assert form.config.train.ways == 5
    assert "train.ways 60 → 5" in form.notice_label.text()


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "meta-lstm"])
def test_maml_family_with_zero_inner_steps_is_refused(window: MainWindow, algorithm: str) -> None:
    form = window.form
    choose(form, algorithm, "sinusoid")
    assert window.start_button.isEnabled()
    form.set_field("train.inner_steps", 0)
    assert not form.valid and not window.start_button.isEnabled()
    assert form.editors["train.inner_steps"].property("invalid")
    reason = window.reason_label.text()
    assert "train.inner_steps" in reason and "inner loop" in reason
    assert window.start() == [] and window.catalog.list_runs() == []
    form.set_field("train.inner_steps", 1)
    assert window.start_button.isEnabled()


def test_fields_the_algorithm_does_not_use_are_hidden(form: RunForm) -> None:
    def shown(key: str) -> bool:
        return form.editors[key].isVisibleTo(form)

    form.show()
    assert shown("train.inner_steps") and shown("eval.inner_steps")
    assert shown("algorithm.inner_lr") and shown("algorithm.first_order")
    choose(form, "protonet", "glyphs")
    assert not shown("train.inner_steps") and not shown("eval.inner_steps")
    assert not form.shape_cells["inner_steps"].isVisibleTo(form)
    assert "algorithm.inner_lr" not in form.editors  # not in ProtoNet's schema
    choose(form, "pretrain-finetune", "glyphs")  # no inner loop in training, fine-tuning at test
    assert not shown("train.inner_steps") and shown("eval.inner_steps")
    assert form.shape_cells["inner_steps"].isVisibleTo(form)
    assert not shown("algorithm.first_order") and shown("algorithm.inner_lr")
    assert form.valid, form.error_label.text()
    choose(form, "fomaml", "glyphs")  # first order is what fomaml is: nothing to choose
    assert not shown("algorithm.first_order") and shown("train.inner_steps")


def test_ways_beyond_the_dataset_are_refused_not_clamped(window: MainWindow) -> None:
    form = window.form
    choose(form, "protonet", "glyphs")  # 800 / 200 / 200 classes of 20 images
    form.set_field("train.ways", 10**12)
    assert form.editors["train.ways"].text() == "1000000000000"  # what was typed stays
    assert not window.start_button.isEnabled()
    assert "train.ways" in form.error_label.text() and "too large" in form.error_label.text()
    form.set_field("train.ways", 801)
    assert not window.start_button.isEnabled()
    assert "only 800 classes" in form.error_label.text()
    assert form.editors["train.ways"].property("invalid")
    form.set_field("train.ways", 800)
    assert form.valid, form.error_label.text()
    form.set_field("eval.ways", 201)  # evaluated on the val and test splits
    assert not form.valid and "eval.ways" in form.error_label.text()
    assert "val split of glyphs has only 200 classes" in form.error_label.text()
    form.set_field("eval.ways", 200)
    form.set_field("train.shots", 5)
    form.set_field("train.queries", 16)  # 21 images a class; glyphs has 20
    assert not form.valid and "only 20" in form.error_label.text()
    form.set_field("train.queries", 15)
    assert form.valid and window.start_button.isEnabled()
    assert window.catalog.list_runs() == []


def test_maml_ways_beyond_the_train_split_are_refused(form: RunForm) -> None:
    choose(form, "maml", "glyphs")
    form.set_field("train.ways", 1000)
    form.set_field("eval.ways", 1000)
    assert not form.valid
    assert form.error.key == "train.ways" and "only 800 classes" in form.error.message


def test_a_dataset_read_from_files_is_not_loaded_to_check_shapes(
    form: RunForm, tmp_path: Path
) -> None:
    choose(form, "protonet", "omniglot")
    form.data_dir.setCurrentText(str(tmp_path / "nothing here"))
    form.set_field("train.ways", 3000)  # checked when the run builds the data
    assert form.valid, form.error_label.text()


def test_seed_text_that_is_not_a_number_is_named(form: RunForm) -> None:
    form.set_field("seed", "abc")
    assert not form.valid
    assert (
        form.error_label.text() == "seeds: 'abc' is not a whole number; use e.g. 0 or 0,1,2 or 0-4"
    )
    assert form.editors["seed"].property("invalid")
    form.set_field("seed", "0-4")
    assert form.valid and form.seeds() == [0, 1, 2, 3, 4]
    form.set_field("seed", "-3")
    assert form.valid and form.seeds() == [-3]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "Infinity"])
def test_a_learning_rate_that_is_not_a_number_is_called_that(form: RunForm, text: str) -> None:
    form.editors["algorithm.meta_lr"].setText(text)
    assert not form.valid
    message = form.error_label.text()
    assert message.startswith("algorithm.meta_lr:") and "is not a number" in message
    assert "less than" not in message


def test_whole_number_fields_name_bad_text(form: RunForm) -> None:
    form.editors["steps"].setText("12abc")
    assert not form.valid and form.error_label.text() == "steps: '12abc' is not a whole number"
    form.editors["steps"].setText("0")
    assert not form.valid and "at least 1" in form.error_label.text()
    form.editors["steps"].setText("2500")
    assert form.valid and form.config.steps == 2500


def test_an_impossible_pair_keeps_start_disabled_and_names_it(form: RunForm) -> None:
    form.editors["algorithm.name"].set_value("protonet")  # on sinusoid
    assert not form.valid and "sinusoid" in form.error_label.text()
    with pytest.raises(ConfigError):
        default_config("protonet", "sinusoid")
    form.editors["algorithm.name"].set_value("maml")
    assert form.valid
    assert form.config.to_dict() == cli_default()
