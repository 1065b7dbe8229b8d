"""``cutmix-train compare``: its statistics on fixed inputs, and real comparisons on digits.

The end-to-end runs train ResNet-20 for two batches of ten images (three per class) in spawned
worker processes: the real pool, Trainer and files, kept to seconds of compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats as scipy_stats

from cutmix_train.cli import main
from cutmix_train.compare import Variant, parse_variant, plot_comparison, results_table, run_overrides
from cutmix_train.stats import paired_difference, t_interval

REPO = Path(__file__).resolve().parents[1]
LOWDATA = REPO / "recipes" / "digits_lowdata.yaml"
# Two batches of ten (three images per class, so the subset is stratified), one eval batch.
TINY = [
    "data.train_per_class=3", "train.batch_size=10", "train.max_duration=2ba", "scheduler.warmup=0ba",
    "eval.interval=1ba", "eval.batch_size=60", "eval.subset_num_batches=1",
]  # fmt: skip
# The measurement (5 seeds, baseline vs CutMix, digits at 10 images per class).
BASELINE = [0.917, 0.922, 0.947, 0.831, 0.922]
CUTMIX = [0.936, 0.947, 0.914, 0.903, 0.944]


def test_t_interval_matches_known_values() -> None:
    iv = t_interval([0.90, 0.92, 0.94])
    # t(0.975, 2) = 4.302653; sd = 0.02; half-width = 4.302653 * 0.02 / sqrt(3)
    assert iv.mean == pytest.approx(0.92)
    assert iv.sd == pytest.approx(0.02)
    assert iv.half_width == pytest.approx(0.0496828, abs=1e-6)
    assert (iv.low, iv.high, iv.n) == (pytest.approx(0.8703172, abs=1e-6), pytest.approx(0.9696828, abs=1e-6), 3)
    five = t_interval(BASELINE)
    assert five.mean == pytest.approx(0.9078)
    assert five.half_width == pytest.approx(2.776445 * five.sd / math.sqrt(5), rel=1e-6)
    lo, hi = scipy_stats.t.interval(0.95, 4, loc=five.mean, scale=scipy_stats.sem(BASELINE))
    assert (five.low, five.high) == (pytest.approx(lo), pytest.approx(hi))
    assert t_interval([1.0, 2.0, 3.0, 4.0], confidence=0.9).half_width == pytest.approx(
        2.353363 * math.sqrt(5 / 3) / 2, rel=1e-6
    )


def test_paired_difference_is_the_interval_of_per_seed_differences() -> None:
    base = dict(enumerate(BASELINE))
    other = dict(enumerate(CUTMIX))
    iv = paired_difference(base, other)
    assert iv.mean == pytest.approx(0.021)
    assert (iv.low, iv.high) == (pytest.approx(-0.0252009, abs=1e-6), pytest.approx(0.0672009, abs=1e-6))
    assert not iv.excludes_zero()  # the five seeds do not resolve the gain
    ci = scipy_stats.ttest_rel(CUTMIX, BASELINE).confidence_interval(0.95)
    assert (iv.low, iv.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # Pairing: a constant shift is resolved exactly, however much the seeds vary.
    shifted = paired_difference(base, {s: a + 0.01 for s, a in base.items()})
    assert shifted.mean == pytest.approx(0.01) and shifted.half_width == pytest.approx(0, abs=1e-12)
    # Only shared seeds pair up.
    assert paired_difference({0: 0.5, 1: 0.6, 2: 0.9}, {1: 0.7, 2: 0.9, 5: 0.0}).n == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t_interval([0.9]), "at least 2 values"),
        (lambda: t_interval([0.9, float("nan")]), "finite"),
        (lambda: t_interval([0.9, 0.8], confidence=1.0), "confidence"),
        (lambda: paired_difference({0: 0.9, 1: 0.8}, {1: 0.7, 2: 0.6}), "2 shared seeds"),
    ],
)
def test_statistics_refuse_what_has_no_interval(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_parse_variant_splits_overrides_but_not_list_values() -> None:
    v = parse_variant("cm:algorithms.cutmix.enabled=true,scheduler.milestones=[0.5dur,0.75dur],train.batch_size=3")
    assert v == Variant(
        "cm", ("algorithms.cutmix.enabled=true", "scheduler.milestones=[0.5dur,0.75dur]", "train.batch_size=3")
    )
    assert parse_variant("baseline") == Variant("baseline", ())
    assert parse_variant("baseline:") == Variant("baseline", ())
    for bad in (":a=1", "bad name:a=1", "x/y", "v:novalue", "v:seed=3", "v:a=1,run_name=x"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_run_overrides_expand_seed_and_put_seed_last() -> None:
    v = Variant("pre", ("data.local=shards/seed{seed}", "seed=99"))
    got = run_overrides(["train.batch_size=10"], v, 4)
    assert got[1:] == ("train.batch_size=10", "data.local=shards/seed4", "seed=99", "seed=4", "run_name=pre-seed4")
    assert got[0] == "logging.progress_bar=false"  # a default, listed first so anything overrides it


def _summary(curve_points: int) -> tuple[dict, dict]:
    summary = {
        "variants": {
            "a": {"mean": 0.9, "ci95": [0.85, 0.95], "n": 3, "sd": 0.02,
                  "accuracy": {"0": 0.88, "1": 0.9, "2": 0.92}, "train_seconds": 1.0},
            "b": {"mean": 0.93, "ci95": [0.9, 0.96], "n": 3, "sd": 0.01,
                  "accuracy": {"0": 0.92, "1": 0.93, "2": 0.94}, "train_seconds": 1.5},
        },
        "paired_gain": {"b": {"mean": 0.03, "ci95": [0.01, 0.05], "n": 3, "sd": 0.01}},
    }  # fmt: skip
    histories = {
        name: [
            [{"epoch": k + 1.0, "accuracy": 0.5 + 0.1 * k + 0.01 * s} for k in range(curve_points)] for s in range(3)
        ]
        for name in ("a", "b")
    }
    return summary, histories


def test_plot_has_a_curve_panel_only_when_runs_evaluated_more_than_once(tmp_path: Path) -> None:
    summary, once = _summary(1)
    single = plot_comparison(summary, once, tmp_path / "one.png", "t")
    summary, curves = _summary(4)
    double = plot_comparison(summary, curves, tmp_path / "two.png", "t")
    for path in (single, double):
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(single) as a, Image.open(double) as b:
        assert b.width > 1.5 * a.width  # the second panel: accuracy against epochs


def test_results_table_rows() -> None:
    summary, _ = _summary(1)
    table = results_table(summary, "a").splitlines()
    assert "gain over a (paired)" in table[0]
    assert table[2].startswith("| a | 3 | 0.9000 | [0.8500, 0.9500] | 0.0200 | — | — |")
    assert table[3].startswith("| b | 3 | 0.9300 | [0.9000, 0.9600] | 0.0100 | +0.0300 | [+0.0100, +0.0500] |")


def _compare(out: Path, *extra: str, variants: tuple[str, ...] = ("base", "cm:algorithms.cutmix.enabled=true")):
    args = ["compare", str(LOWDATA), *TINY, *extra, "--seeds", "2", "--jobs", "2", "--out", str(out)]
    for v in variants:
        args += ["--variant", v]
    return CliRunner().invoke(main, args)


def test_compare_end_to_end_then_reuses_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    first = _compare(out)
    assert first.exit_code == 0, first.output
    assert "training 4 runs, 2 at a time" in first.stderr
    line = json.loads(first.stdout.strip().splitlines()[-1])
    # The JSON line's schema, exactly.
    assert set(line) == {"variants", "paired_gain", "png"}
    assert set(line["variants"]) == {"base", "cm"} and set(line["paired_gain"]) == {"cm"}
    for entry in line["variants"].values():
        assert set(entry) == {"mean", "ci95", "n"} and entry["n"] == 2
        assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    assert set(line["paired_gain"]["cm"]) == {"mean", "ci95"}
    png = Path(line["png"])
    assert png == out / "compare.png" and png.stat().st_size > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The numbers are those of the runs' own summaries, recomputed independently.
    runs = {k: json.loads((out / "runs" / f"{k}.json").read_text()) for k in
            ("base-seed0", "base-seed1", "cm-seed0", "cm-seed1")}  # fmt: skip
    assert runs["cm-seed1"]["cutmix"] is True and runs["base-seed1"]["cutmix"] is False
    assert runs["base-seed1"]["batches"] == 2 and runs["base-seed1"]["samples"] == 20
    assert runs["base-seed1"]["train_images"] == 30  # 3 per class: data.train_per_class
    assert [p["batch"] for p in runs["cm-seed0"]["eval_history"]] == [1, 2]
    base = [runs[f"base-seed{s}"]["eval_accuracy"] for s in (0, 1)]
    cm = [runs[f"cm-seed{s}"]["eval_accuracy"] for s in (0, 1)]
    assert line["variants"]["base"]["mean"] == pytest.approx(sum(base) / 2, abs=1e-6)
    diffs = [c - b for b, c in zip(base, cm, strict=True)]
    assert line["paired_gain"]["cm"]["mean"] == pytest.approx(sum(diffs) / 2, abs=1e-6)
    if diffs[0] != diffs[1]:
        lo, hi = scipy_stats.t.interval(0.95, 1, loc=sum(diffs) / 2, scale=scipy_stats.sem(diffs))
        assert line["paired_gain"]["cm"]["ci95"] == [pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6)]
    report = json.loads((out / "compare.json").read_text())
    assert report["variants"]["cm"]["accuracy"] == {"0": cm[0], "1": cm[1]}
    assert "| base | 2 |" in first.stdout and "| cm | 2 |" in first.stdout

    # A second call trains nothing: every run is reused, and the result is the same.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    second = _compare(out)
    assert second.exit_code == 0, second.output
    assert "reusing 4 finished runs" in second.stderr and "training" not in second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    assert json.loads(second.stdout.strip().splitlines()[-1]) == line

    # A run recorded before a schema key existed is still that run: the key takes its default.
    stored = out / "runs" / "base-seed0.json"
    older = json.loads(stored.read_text())
    assert "    stop_at: null\n" in older["recipe_yaml"]
    older["recipe_yaml"] = older["recipe_yaml"].replace("    stop_at: null\n", "")
    stored.write_text(json.dumps(older))
    runs["base-seed0"] = older

    # A changed variant trains again; the unchanged one is still reused.
    third = _compare(out, variants=("base", "cm:algorithms.cutmix.enabled=true,algorithms.cutmix.alpha=0.5"))
    assert third.exit_code == 0, third.output
    assert "reusing 2 finished runs" in third.stderr and "training 2 runs again" in third.stderr
    assert json.loads((out / "runs" / "base-seed0.json").read_text()) == runs["base-seed0"]


def test_a_failing_run_fails_the_comparison_by_name(tmp_path: Path) -> None:
    broken = ("broken:data.dataset=premixed,data.train_per_class=null,algorithms.cutmix.enabled=false,"
              f"data.local={tmp_path / 'no-shards'},data.eval_dataset=digits")  # fmt: skip
    result = _compare(tmp_path / "cmp", variants=("base", broken))
    assert result.exit_code == 1
    assert "run broken-seed" in result.output and "failed" in result.output
    assert "no pre-mixed dataset" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "cmp" / "compare.json").exists()
    assert list((tmp_path / "cmp" / "runs").glob("broken-seed*.error.txt"))
    # The baseline runs (started first) finished, in flight or not, and are kept for a rerun.
    assert "2 finished runs are kept" in result.output
    assert {p.name for p in (tmp_path / "cmp" / "runs").glob("*.json")} == {"base-seed0.json", "base-seed1.json"}


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (("only",), "at least two variants"),
        (("a", "a:train.batch_size=1"), "repeated: a"),
        (("a", "b c:train.batch_size=1"), "expected NAME"),
        (("a", "b:seed=5"), "seed is set by compare for every run"),
        (("a", "b:data.mean=[1"), "its value is not valid YAML"),
        (("a", "b:no.such.key=1"), "variant b (seed 0): "),
        (("a", "b:data.train_per_class=0"), "data.train_per_class: must be > 0"),
    ],
)
def test_bad_variants_fail_before_anything_trains(tmp_path: Path, variants: tuple[str, ...], message: str) -> None:
    result = _compare(tmp_path / "cmp", variants=variants)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cmp" / "runs").exists()


def test_first_seed_moves_every_run_to_the_selection_seeds(tmp_path: Path) -> None:
    # A bad variant fails while every run's recipe is resolved, naming the run's seed: 1000 first.
    result = _compare(tmp_path / "cmp", "--first-seed", "1000", variants=("a", "b:data.train_per_class=0"))
    assert result.exit_code != 0
    assert "variant b (seed 1000): data.train_per_class: must be > 0" in result.output
    assert run_overrides([], Variant("a", ()), 1001)[-2:] == ("seed=1001", "run_name=a-seed1001")
