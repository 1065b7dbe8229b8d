"""Recipe loading, overrides and the errors a bad recipe gets (before any training)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutmix_train.cli import main
from cutmix_train.config import Recipe, RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL_RECIPES = sorted(RECIPES.glob("*.yaml"))


def test_recipes_directory_has_the_four_recipes() -> None:
    names = {p.stem for p in ALL_RECIPES}
    assert {
        "demo",
        "cifar10_resnet20_cutmix",
        "cifar10_resnet20_baseline",
        "cifar10_resnet20_premixed",
    } <= names


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_names_itself(path: Path) -> None:
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name == path.stem


def test_cifar_recipes_differ_only_in_cutmix_and_name() -> None:
    cutmix = load_recipe(RECIPES / "cifar10_resnet20_cutmix.yaml")
    baseline = load_recipe(RECIPES / "cifar10_resnet20_baseline.yaml")
    assert cutmix.algorithms.cutmix.enabled and not baseline.algorithms.cutmix.enabled
    assert cutmix.algorithms.cutmix.alpha == 1.0
    for section in ("model", "data", "train", "eval", "optimizer", "scheduler", "checkpoint"):
        assert getattr(cutmix, section) == getattr(baseline, section), section
    assert cutmix.optimizer.lr == 0.1 and cutmix.optimizer.momentum == 0.9
    assert cutmix.train.batch_size == 128 and int(cutmix.train.max_duration[:-2]) >= 160


def test_overrides_apply_in_order_and_keep_types() -> None:
    recipe = load_recipe(
        RECIPES / "demo.yaml",
        ["train.batch_size=16", "optimizer.lr=0.5", "train.batch_size=32", "data.mean=[0.1,0.2,0.3]"],
    )
    assert recipe.train.batch_size == 32
    assert recipe.optimizer.lr == 0.5
    assert recipe.data.mean == [0.1, 0.2, 0.3]


def test_print_recipe_shows_the_resolved_values() -> None:
    result = CliRunner().invoke(main, [str(RECIPES / "demo.yaml"), "train.batch_size=16", "--print-recipe"])
    assert result.exit_code == 0, result.output
    assert "batch_size: 16" in result.stdout


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "expected"),
    [
        ("train:\n  batch_sizee: 3\n", [], "train.batch_sizee"),
        ("name: x\n", ["train.batch_size=abc"], "train.batch_size"),
        ("train:\n  batch_size: [1, 2]\n", [], "train.batch_size"),
        ("name: x\n", ["model.name=resnet21"], "model.name"),
        ("name: x\n", ["data.dataset=imagenet"], "data.dataset"),
        ("name: x\n", ["train.max_duration=ten"], "train.max_duration"),
        ("name: x\n", ["optimizer.name=lamb"], "optimizer.name"),
        ("name: x\n", ["bogus=1"], "bogus"),
        ("name: x\n", ["algorithms.cutmix.alpha=nan"], "algorithms.cutmix.alpha"),
        ("name: x\n", ["algorithms.cutmix.alpha=-1"], "algorithms.cutmix.alpha"),
        ("name: x\n", ["algorithms.cutmix.p=1.5"], "algorithms.cutmix.p"),
        ("name: x\n", ["checkpoint.load_path=/no/such/ckpt.pt"], "checkpoint.load_path"),
        ("name: x\n", ["train.batch_size"], "train.batch_size"),
        (
            "data:\n  dataset: premixed\n  local: somewhere\nalgorithms:\n  cutmix:\n    enabled: true\n",
            [],
            "algorithms.cutmix.enabled",
        ),
        ("- just\n- a list\n", [], "mapping"),
    ],
)
def test_bad_recipe_fails_before_training_naming_the_key(
    tmp_path: Path, yaml_text: str, overrides: list[str], expected: str
) -> None:
    with pytest.raises(RecipeError, match=expected.replace(".", r"\.")):
        load_recipe(_write(tmp_path, yaml_text), overrides)
    result = CliRunner().invoke(main, [str(tmp_path / "recipe.yaml"), *overrides])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    assert expected in result.output
    assert "Traceback" not in result.output


def test_missing_recipe_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(main, [str(missing)])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert str(missing) in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the recipe is empty"),
        ("# only a comment\n", "the recipe is empty"),
        ("{}\n", "the recipe is empty"),
        ("- a\n- b\n", "a recipe must be a YAML mapping"),
        ("name: [x\n", "not valid YAML"),
        ("name: a\ntrain: {}\ntrain: {}\n", "duplicate key train"),
    ],
)
def test_an_empty_or_malformed_recipe_file_is_refused_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    """An empty or truncated file must not train every default in silence."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(path)
    result = CliRunner().invoke(main, [str(path), "--dry-run"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert str(path) in result.output and expected in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("override", ["data.mean=[1", 'name="abc', "name=!!python/object/apply:os.system [x]"])
def test_an_override_whose_value_is_not_yaml_is_a_one_line_error(override: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(f"override {override!r}: its value is not valid YAML")):
        load_recipe(RECIPES / "demo.yaml", [override])
    result = CliRunner().invoke(main, [str(RECIPES / "demo.yaml"), "--dry-run", override])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "not valid YAML" in result.output and "Traceback" not in result.output


def test_an_output_folder_that_cannot_be_created_is_a_one_line_error() -> None:
    """Composer creates the checkpoint folder while the Trainer is built; its OSError was a
    traceback. (Run as a process: the CLI's real stdout and stderr.)"""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "cutmix_train.cli", str(RECIPES / "demo.yaml"), "--dry-run",
         "checkpoint.save_folder=/proc/no-such-folder/ck", "logging.progress_bar=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "Error: cannot create the run's outputs" in run.stderr and "/proc/no-such-folder" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_missing_cifar_folder_is_named_before_training(tmp_path: Path) -> None:
    root = tmp_path / "no-cifar-here"
    args = [str(RECIPES / "cifar10_resnet20_cutmix.yaml"), f"data.root={root}", "checkpoint.autoresume=false"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "data.root" in result.output and "cifar-10-batches-py" in result.output
    assert str(root) in result.output and "Traceback" not in result.output


def test_missing_premixed_shards_are_named(tmp_path: Path) -> None:
    local = tmp_path / "no-shards"
    args = [str(RECIPES / "cifar10_resnet20_premixed.yaml"), "data.remote=null", f"data.local={local}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "data.local" in result.output and str(local) in result.output
    assert "Traceback" not in result.output


def test_dry_run_builds_the_trainer_and_stops() -> None:
    result = CliRunner().invoke(main, [str(RECIPES / "demo.yaml"), "--dry-run", "logging.progress_bar=false"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # no training, so no summary
    assert "trainer built" in result.stderr


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=nan", "optimizer.lr"),
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay"),
        ("optimizer.weight_decay=inf", "optimizer.weight_decay"),
        ("scheduler.gamma=nan", "scheduler.gamma"),
        ("scheduler.gamma=inf", "scheduler.gamma"),
        ("data.mean=[0.1,nan,0.1]", "data.mean"),
        ("data.std=[0.2,inf,0.2]", "data.std"),
        ("eval.interval=0ep", "eval.interval"),
        ("eval.interval=0dur", "eval.interval"),
        ("checkpoint.save_interval=0ba", "checkpoint.save_interval"),
        ("train.subset_num_batches=0", "train.subset_num_batches"),
        ("eval.subset_num_batches=0", "eval.subset_num_batches"),
        ("train.max_duration=0ep", "train.max_duration"),
        ("seed=-1", "seed"),
        (f"seed={2**32}", "seed"),
        ("data.shuffle_seed=-1", "data.shuffle_seed"),
        ("data.subset_seed=-1", "data.subset_seed"),
        ("optimizer.momentum=0", "optimizer.nesterov"),  # the demo's nesterov needs momentum: torch raised
        # Finite but untrainable (each passed --dry-run): gradient ascent, inf after x / std, an
        # lr that overflows the first step, crops of pure padding, a million worker processes.
        ("scheduler.alpha_f=-1", "scheduler.alpha_f"),
        ("scheduler.alpha_f=1e308", "scheduler.alpha_f"),
        ("scheduler.gamma=2", "scheduler.gamma"),
        ("data.std=[1e-320,1,1]", "data.std"),
        ("data.std=[63.0,62.1,66.7]", "data.std"),  # 0-255 statistics
        ("data.mean=[1e308,0.5,0.5]", "data.mean"),
        ("data.mean=[125.3,123.0,113.9]", "data.mean"),
        ("optimizer.lr=1e308", "optimizer.lr"),
        ("optimizer.weight_decay=1", "optimizer.weight_decay"),
        ("data.augment.pad=1000000", "data.augment.pad"),
        ("data.augment.pad=32", "data.augment.pad"),  # the demo's images are 32x32
        ("data.num_workers=1000000", "data.num_workers"),
        # Durations that overflowed (a traceback from the recipe check, then from Composer's build).
        ("train.max_duration=infep", "train.max_duration"),
        ("train.max_duration=1e308ep", "train.max_duration"),
        ("train.max_duration=1e13ba", "train.max_duration"),
        ("scheduler.warmup=1e308ep", "scheduler.warmup"),
        ("scheduler.warmup=2dur", "scheduler.warmup"),
        ("scheduler.warmup=nandur", "scheduler.warmup"),
        ("scheduler.milestones=[0.5dur,1e308ba]", "scheduler.milestones[1]"),
        ("eval.interval=infdur", "eval.interval"),
        ("checkpoint.save_interval=1e308ep", "checkpoint.save_interval"),
        ("algorithms.cutmix.stop_at=1e308ep", "algorithms.cutmix.stop_at"),
    ],
)
def test_values_that_cannot_train_are_one_line_errors_at_load_time(tmp_path: Path, override: str, key: str) -> None:
    # Each of these used to be accepted: NaN/inf trained to eval_loss NaN, zero intervals never
    # evaluated or saved, subset_num_batches=0 hung, max_duration=0ep and bad seeds crashed.
    with pytest.raises(RecipeError, match=rf"^{re.escape(key)}: "):
        load_recipe(RECIPES / "demo.yaml", [override])
    result = CliRunner().invoke(main, [str(RECIPES / "demo.yaml"), override])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"Error: {key}: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def _one_line_cli_error(args: list[str], key: str) -> str:
    result = CliRunner().invoke(main, [str(RECIPES / "demo.yaml"), *args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"Error: {key}: ") and result.output.count("\n") == 1
    return result.output


def test_autoresume_with_no_checkpoint_kept_is_refused(tmp_path: Path) -> None:
    """num_to_keep=0 deletes every checkpoint: each rerun would silently train from the start."""
    args = [f"checkpoint.save_folder={tmp_path / 'ck'}", "checkpoint.autoresume=true", "checkpoint.num_to_keep=0"]
    assert "nothing to resume" in _one_line_cli_error(args, "checkpoint.num_to_keep")
    load_recipe(RECIPES / "demo.yaml", [*args[:2], "checkpoint.num_to_keep=1"])  # one kept is enough


@pytest.mark.parametrize(("key", "below"), [("logging.file", "log.txt"), ("logging.tensorboard", ""),
                                            ("logging.mlflow", "store")])
def test_a_logging_path_through_a_file_is_named(tmp_path: Path, key: str, below: str) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = blocker / below if below else blocker
    output = _one_line_cli_error([f"{key}={path}", "--dry-run"], key)
    assert f"{blocker} is a file" in output
    assert blocker.read_text() == "x"  # nothing written over it


def test_largest_seed_and_zero_warmup_still_load() -> None:
    recipe = load_recipe(RECIPES / "demo.yaml", [f"seed={2**32 - 1}", "scheduler.warmup=0ba", "data.shuffle_seed=0"])
    assert recipe.seed == 2**32 - 1 and recipe.scheduler.warmup == "0ba"


def test_values_at_the_ends_of_their_ranges_still_load() -> None:
    edges = ["scheduler.alpha_f=1", "scheduler.gamma=1", "data.mean=[0,0.5,1]", "data.std=[0.001,0.5,1]",
             "optimizer.lr=10", "data.augment.pad=31", "data.num_workers=256", f"train.max_duration={10**12}ba",
             "scheduler.warmup=1dur", "scheduler.milestones=[0dur,1dur]"]  # fmt: skip
    recipe = load_recipe(RECIPES / "demo.yaml", edges)
    assert recipe.optimizer.lr == 10 and recipe.data.num_workers == 256 and recipe.data.augment.pad == 31


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # The bound and its reason are named, not only the key.
        (["optimizer.lr=1e308"], "must be in (0, 10], got 1e+308"),
        (["data.num_workers=1000000"], "must be in [0, 256], got 1000000"),
        (["data.augment.pad=32"], "must be in [0, 31], below the image side 32 (data.image_size)"),
        (["data.std=[1e-320,1,1]"], "must be in [0.001, 1]"),
        (["train.max_duration=1e308ep"], "must be at most 10**12ep"),
        (["train.max_duration=infep"], "is not a finite time"),
        (["scheduler.warmup=2dur"], "a fraction of the run, in [0, 1]dur"),
    ],
)
def test_a_refused_value_names_its_valid_range(overrides: list[str], expected: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(RECIPES / "demo.yaml", overrides)


def test_a_warmup_in_steps_with_a_run_in_samples_is_refused_at_load() -> None:
    """Composer compares the two in one unit: a ValueError traceback from the Trainer's build."""
    output = _one_line_cli_error(["train.max_duration=1000sp", "scheduler.warmup=1ba", "--dry-run"], "scheduler.warmup")
    assert "dur" in output
    load_recipe(RECIPES / "demo.yaml", ["train.max_duration=1000sp", "scheduler.warmup=0.1dur"])  # a fraction is fine


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("algorithms.cutmix.alpha=-1", {"alpha": -1.0}),
        ("algorithms.cutmix.alpha=1e301", {"alpha": 1e301}),
        ("algorithms.cutmix.p=1.5", {"p": 1.5}),
        ("algorithms.cutmix.mode=pair", {"mode": "pair"}),
        ("algorithms.cutmix.minmax=[0.8,0.2]", {"minmax": [0.8, 0.2]}),
        ("algorithms.cutmix.stop_at=soon", {"stop_at": "soon"}),
    ],
)
def test_cutmix_options_get_cutmix_own_message_under_the_recipe_key(override: str, option: dict) -> None:
    """One validator (cutmix_algo.check_options), its message prefixed with the section once."""
    from cutmix_algo import check_options

    with pytest.raises(ValueError) as cutmix_error:
        check_options(**option)
    with pytest.raises(RecipeError) as recipe_error:
        load_recipe(RECIPES / "demo.yaml", [override])
    assert str(recipe_error.value) == f"algorithms.cutmix.{cutmix_error.value}"
