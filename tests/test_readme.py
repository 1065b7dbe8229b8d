"""Docs are code: every shell command in the READMEs runs, as written, against the test fixtures.

Each fenced ``bash`` block of each README is split into commands (backslash continuations joined,
comments dropped) and run in order in one scratch folder per README, with:
- a fake CIFAR-10 in its own pickle layout at ``data/`` and ``data/cifar10/`` (the spellings the
  READMEs use), and ``/data`` read as that folder (the one substitution of a path);
- a real S3 server (moto) on 127.0.0.1, ``S3_ENDPOINT_URL`` set, every bucket the README names
  created empty;
- tiny sizes through the tools' own overrides, appended after the README's arguments (the last
  value wins in both CLIs): two batches of training, two pre-mixed epochs.
A command that exits non-zero fails the test with its output. The commands that cannot run on a
2-core CPU machine are listed in ``NOT_RUN`` with the reason; a README command matching none of
them and failing to run is a broken doc.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_cifar10

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "cutmix_algo/README.md", "writer/README.md", "cutmix_train/README.md", "bench/README.md"]
BIN = Path(sys.executable).parent

# (pattern, reason): commands matching a pattern are not run, for that reason.
NOT_RUN: list[tuple[str, str]] = [
    (r"^make test\b", "the suite itself: CI runs it, and running it from a test would recurse"),
    (r"^make demo\b|cutmix_train\.demo\b",
     "the main job, about 4 minutes on 2 cores; its write, verify and compare steps run in "
     "tests/test_compare.py and tests/test_writer_cli.py"),
    (r"^bash bench/gpu_(wheels|check)\.sh\b",
     "the GPU machine's checks: one fetches 16 MB of wheels for it, the other needs its Python "
     "3.12 with torch 2.11 (bench/README.md)"),
    (r"^make bench\b|bench/", "a benchmark: minutes of timed side-by-side runs, never a test (DEVELOPERS.md)"),
    (r"--nproc 8\b|-n 8\b|--world_size\b", "needs a node of 8 GPUs (or several nodes)"),
    # Two processes under Composer's launcher cost half a minute of imports each; the suite runs
    # these very commands once, where their output is checked in detail, not twice.
    (r"^cutmix-train recipes/demo\.yaml --nproc 2$",
     "run as written (with tiny overrides) by "
     "tests/test_distributed.py::test_two_process_online_cutmix_ranks_differ_repeat_and_resume"),
    (r"^composer -n 2 -m cutmix_train\.cli recipes/demo\.yaml --summary summary\.json$",
     "run as written (with tiny overrides) by "
     "tests/test_distributed.py::test_two_process_online_cutmix_ranks_differ_repeat_and_resume"),
    (TEMPLATE := r"(^|\s)\.\.\.(\s|$)",
     "a template: `...` stands for the flags of the command above (its block is skipped whole)"),
]

# Appended to a command (after the README's own arguments) to keep it tiny.
TINY_TRAIN = [
    "train.max_duration=2ba", "train.batch_size=8", "train.subset_num_batches=-1",
    "eval.interval=1dur", "eval.batch_size=32", "eval.subset_num_batches=1",
    "data.num_workers=0", "logging.progress_bar=false",
]
TINY_WRITE = ["--epochs", "2", "--batch-size", "16", "--workers", "1"]


def blocks(text: str) -> list[tuple[int, str]]:
    """The ``bash``/``sh``/``console`` fenced blocks of a Markdown text, with their first line."""
    found, lines, inside, lang, start, body = [], text.splitlines(), False, "", 0, []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if not inside:
                inside, lang, start, body = True, stripped[3:].strip().lower(), number + 1, []
            else:
                inside = False
                if lang in ("bash", "sh", "shell", "console"):
                    found.append((start, "\n".join(body)))
            continue
        if inside:
            body.append(line)
    return found


def commands(block: str) -> list[str]:
    """Split a block into commands: continuations joined, comment lines and trailing comments dropped."""
    out, pending = [], ""
    for line in block.splitlines():
        if not pending and line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            out.append(" ".join(shlex.quote(w) if not w.startswith("$") else w for w in words))
    return out


def not_run_reason(command: str) -> str | None:
    for pattern, reason in NOT_RUN:
        if re.search(pattern, command):
            return reason
    return None


def shrink(command: str) -> list[str]:
    """The commands to run for one README command: sizes shrunk, multi-machine loops unrolled."""
    words = shlex.split(command)
    words = [w if w != "/data" and not w.startswith("/data/") and "=/data" not in w
             else w.replace("/data", "data") for w in words]
    program = words[0]
    if program in ("cutmix-train", "composer"):
        if "--print-recipe" not in words and "--dry-run" not in words:
            words += TINY_TRAIN + ["data.local=cache/" + str(abs(hash(command)) % 10**8)]
        if words[1:2] == ["compare"]:
            words += ["--seeds", "2", "--jobs", "2"]
    elif program == "cutmix-writer" and len(words) > 1 and words[1] == "write":
        words += TINY_WRITE
    if "$I" in words:  # one machine of a group: run every group here, one after the other
        groups = int(words[words.index("--num-groups") + 1])
        return [" ".join(shlex.quote(w) for w in words).replace("'$I'", str(i)) for i in range(groups)]
    return [" ".join(shlex.quote(w) for w in words)]


def _doc_commands(doc: str) -> list[tuple[int, str]]:
    """A README's commands in order; a block holding a template (``...``) is skipped whole, since
    its other lines (a merge after templated writes, say) depend on the template's."""
    out = []
    for line, block in blocks((ROOT / doc).read_text()):
        cmds = commands(block)
        if any(re.search(TEMPLATE, c) for c in cmds):
            continue
        out += [(line, c) for c in cmds]
    return out


def test_every_readme_command_is_parsed_and_either_run_or_listed() -> None:
    total = 0
    for doc in DOCS:
        for _, command in _doc_commands(doc):
            total += 1
            assert shlex.split(command)[0] in {"make", "cutmix-train", "cutmix-writer", "composer",
                                               "python", ".venv/bin/python", "bash"}, (doc, command)
    assert total >= 10


def _buckets(doc: str) -> set[str]:
    return set(re.findall(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])", (ROOT / doc).read_text()))


def _empty_buckets(endpoint: str, names: set[str]) -> None:
    import boto3

    s3 = boto3.resource("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in names:
        bucket = s3.Bucket(name)
        if bucket.creation_date is None:
            bucket.create()
        bucket.objects.all().delete()


@pytest.mark.parametrize("doc", [d for d in DOCS if any(not not_run_reason(c) for _, c in _doc_commands(d))])
def test_readme_commands_run(doc: str, tmp_path: Path, moto_endpoint: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path / "data", per_batch=20, test_size=20)
    write_cifar10(tmp_path / "data" / "cifar10", per_batch=20, test_size=20)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    _empty_buckets(moto_endpoint, _buckets(doc))
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": str(ROOT),
    })
    failures, ran = [], 0
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for line, command in _doc_commands(doc):
        if not_run_reason(command):
            continue
        for runnable in shrink(command):
            ran += 1
            began = time.monotonic()
            code, output = _run(runnable, tmp_path, env)
            print(f"{time.monotonic() - began:6.1f} s  rc={code}  {runnable}")
            if code != 0:
                failures.append(f"{doc}:{line}: `{command}` exited {code}\n{output[-1500:]}")
    assert ran > 0
    assert not failures, "\n\n".join(failures)


def _run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run one command: the two CLIs in this process through their click entry points (the same
    code the console scripts call, without paying the imports again per command), anything that
    launches processes (``--nproc``, ``composer``, ``python``) as a real subprocess."""
    words = shlex.split(command)
    if words[0] in ("cutmix-writer", "cutmix-train") and "--nproc" not in words:
        return _run_in_process(words, cwd)
    result = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout + result.stderr


def _run_in_process(words: list[str], cwd: Path) -> tuple[int, str]:
    """Call a CLI's click entry point as its console script would, output into a real file.

    A real file (not click's test runner's in-memory one): libraries under the CLIs ask stdout
    for its ``fileno()``.
    """
    import contextlib
    import traceback

    import click

    if words[0] == "cutmix-writer":
        from writer.cli import main
    else:
        from cutmix_train.cli import main
    with open(cwd / ".command-output", "w+") as out, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        try:
            main.main(args=words[1:], prog_name=words[0], standalone_mode=False)
            code = 0
        except click.ClickException as error:
            error.show(file=out)
            code = error.exit_code
        except click.exceptions.Exit as done:
            code = done.exit_code
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Exception:  # a traceback is a broken doc too: show it
            traceback.print_exc(file=out)
            code = 1
        out.seek(0)
        return code, out.read()
