"""Build the offline SWE example tasks: three small Python repositories with real git history,
a real bug, tests, a gold patch and a test patch; one image per repository built offline FROM
the default sandbox image; and ``examples/swe/tasks.jsonl`` in SWE-bench's row format.

Commits use fixed authors and dates, so ``base_commit`` is the same on every machine and
``tasks.jsonl`` (committed) is checked against what this script computes. Images are skipped
when their content-hashed tag exists.

    .venv/bin/python examples/swe/build.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE_IMAGE = os.environ.get("AGENTIC_SWE_BASE_IMAGE", "agentic-rollout/sandbox:latest")
TEST_COMMAND = "python3 -m pytest -rA -p no:cacheprovider"

REPOS: list[dict[str, Any]] = [
    {
        "name": "textkit",
        "problem_statement": (
            "slugify() leaves runs of dashes\n\n"
            "`textkit.slugify('Hello,  World!')` returns `'hello---world'`; it should return "
            "`'hello-world'`. Every run of characters that are not letters or digits should become "
            "a single dash."
        ),
        "commits": [
            (
                "Initial textkit",
                {
                    "textkit/__init__.py": "from textkit.slug import slugify, word_count\n\n__all__ = ['slugify', 'word_count']\n",
                    "textkit/slug.py": (
                        "def slugify(text: str) -> str:\n"
                        '    """Lowercase words joined by dashes: \'Hello World\' -> \'hello-world\'."""\n'
                        "    return '-'.join(text.lower().split())\n\n\n"
                        "def word_count(text: str) -> int:\n"
                        "    return len(text.split())\n"
                    ),
                    "tests/test_slug.py": (
                        "from textkit import slugify, word_count\n\n\n"
                        "def test_slugify_basic():\n"
                        "    assert slugify('Hello World') == 'hello-world'\n\n\n"
                        "def test_word_count():\n"
                        "    assert word_count('a b  c') == 3\n"
                    ),
                },
            ),
            (
                "Handle punctuation in slugify",
                {
                    "textkit/slug.py": (
                        "import re\n\n\n"
                        "def slugify(text: str) -> str:\n"
                        '    """Lowercase words joined by dashes: \'Hello, World!\' -> \'hello-world\'."""\n'
                        "    text = text.strip().lower()\n"
                        "    text = re.sub(r'[^a-z0-9]', '-', text)\n"
                        "    return text.strip('-')\n\n\n"
                        "def word_count(text: str) -> int:\n"
                        "    return len(text.split())\n"
                    ),
                },
            ),
        ],
        "fix": {
            "textkit/slug.py": (
                "re.sub(r'[^a-z0-9]', '-', text)",
                "re.sub(r'[^a-z0-9]+', '-', text)",
            )
        },
        "new_tests": {
            "tests/test_slug.py": (
                "\n\ndef test_slugify_collapses_separators():\n"
                "    assert slugify('Hello,  World!') == 'hello-world'\n"
                "    assert slugify('--a__b--') == 'a-b'\n"
            )
        },
        "FAIL_TO_PASS": ["tests/test_slug.py::test_slugify_collapses_separators"],
        "PASS_TO_PASS": [
            "tests/test_slug.py::test_slugify_basic",
            "tests/test_slug.py::test_word_count",
        ],
    },
    {
        "name": "statskit",
        "problem_statement": (
            "median() is wrong for lists of even length\n\n"
            "`statskit.median([1, 2, 3, 4])` returns `3`, but the median of an even number of "
            "values is the mean of the two middle ones: `2.5`."
        ),
        "commits": [
            (
                "Initial statskit",
                {
                    "statskit/__init__.py": "from statskit.stats import mean, median\n\n__all__ = ['mean', 'median']\n",
                    "statskit/stats.py": (
                        "def mean(values):\n"
                        "    values = list(values)\n"
                        "    return sum(values) / len(values)\n"
                    ),
                    "tests/test_stats.py": (
                        "from statskit import mean\n\n\n"
                        "def test_mean():\n"
                        "    assert mean([1, 2, 3]) == 2\n"
                    ),
                },
            ),
            (
                "Add median",
                {
                    "statskit/stats.py": (
                        "def mean(values):\n"
                        "    values = list(values)\n"
                        "    return sum(values) / len(values)\n\n\n"
                        "def median(values):\n"
                        "    ordered = sorted(values)\n"
                        "    return ordered[len(ordered) // 2]\n"
                    ),
                    "tests/test_stats.py": (
                        "from statskit import mean, median\n\n\n"
                        "def test_mean():\n"
                        "    assert mean([1, 2, 3]) == 2\n\n\n"
                        "def test_median_odd_length():\n"
                        "    assert median([3, 1, 2]) == 2\n"
                    ),
                },
            ),
        ],
        "fix": {
            "statskit/stats.py": (
                "    ordered = sorted(values)\n    return ordered[len(ordered) // 2]\n",
                "    ordered = sorted(values)\n    mid = len(ordered) // 2\n"
                "    if len(ordered) % 2 == 0:\n        return (ordered[mid - 1] + ordered[mid]) / 2\n"
                "    return ordered[mid]\n",
            )
        },
        "new_tests": {
            "tests/test_stats.py": (
                "\n\ndef test_median_even_length():\n"
                "    assert median([1, 2, 3, 4]) == 2.5\n"
                "    assert median([4, 1]) == 2.5\n"
            )
        },
        "FAIL_TO_PASS": ["tests/test_stats.py::test_median_even_length"],
        "PASS_TO_PASS": [
            "tests/test_stats.py::test_mean",
            "tests/test_stats.py::test_median_odd_length",
        ],
    },
    {
        "name": "calkit",
        "problem_statement": (
            "is_leap_year(1900) returns True\n\n"
            "Century years are leap years only when divisible by 400: 1900 and 2100 are not leap "
            "years, 2000 is. `calkit.is_leap_year` gets the centuries wrong, and so does "
            "`days_in_february`."
        ),
        "commits": [
            (
                "Initial calkit",
                {
                    "calkit/__init__.py": "from calkit.leap import days_in_february, is_leap_year\n\n__all__ = ['days_in_february', 'is_leap_year']\n",
                    "calkit/leap.py": (
                        "def is_leap_year(year: int) -> bool:\n    return year % 4 == 0\n"
                    ),
                    "tests/test_leap.py": (
                        "from calkit import is_leap_year\n\n\n"
                        "def test_ordinary_leap_years():\n"
                        "    assert is_leap_year(2024) and is_leap_year(1996)\n\n\n"
                        "def test_non_leap_years():\n"
                        "    assert not is_leap_year(2023) and not is_leap_year(2019)\n"
                    ),
                },
            ),
            (
                "Add days_in_february",
                {
                    "calkit/leap.py": (
                        "def is_leap_year(year: int) -> bool:\n"
                        "    return year % 4 == 0\n\n\n"
                        "def days_in_february(year: int) -> int:\n"
                        "    return 29 if is_leap_year(year) else 28\n"
                    ),
                    "tests/test_leap.py": (
                        "from calkit import days_in_february, is_leap_year\n\n\n"
                        "def test_ordinary_leap_years():\n"
                        "    assert is_leap_year(2024) and is_leap_year(1996)\n\n\n"
                        "def test_non_leap_years():\n"
                        "    assert not is_leap_year(2023) and not is_leap_year(2019)\n\n\n"
                        "def test_days_in_february():\n"
                        "    assert days_in_february(2024) == 29 and days_in_february(2023) == 28\n"
                    ),
                },
            ),
        ],
        "fix": {
            "calkit/leap.py": (
                "    return year % 4 == 0\n\n\ndef days",
                "    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n\n\ndef days",
            )
        },
        "new_tests": {
            "tests/test_leap.py": (
                "\n\ndef test_century_years():\n"
                "    assert not is_leap_year(1900) and not is_leap_year(2100)\n"
                "    assert is_leap_year(2000)\n"
                "    assert days_in_february(1900) == 28\n"
            )
        },
        "FAIL_TO_PASS": ["tests/test_leap.py::test_century_years"],
        "PASS_TO_PASS": [
            "tests/test_leap.py::test_days_in_february",
            "tests/test_leap.py::test_non_leap_years",
            "tests/test_leap.py::test_ordinary_leap_years",
        ],
    },
]


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Agentic Rollout",
        "GIT_AUTHOR_EMAIL": "examples@agentic-rollout.invalid",
        "GIT_COMMITTER_NAME": "Agentic Rollout",
        "GIT_COMMITTER_EMAIL": "examples@agentic-rollout.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def make_repo(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for message, files in spec["commits"]:
        for rel, content in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(content)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message)
    base = git(repo, "rev-parse", "HEAD").strip()
    for rel, (old, new) in spec["fix"].items():
        text = (repo / rel).read_text()
        assert text.count(old) == 1, (spec["name"], rel)
        (repo / rel).write_text(text.replace(old, new))
    gold = git(repo, "diff")
    git(repo, "checkout", "-q", ".")
    for rel, addition in spec["new_tests"].items():
        (repo / rel).write_text((repo / rel).read_text() + addition)
    test_patch = git(repo, "diff")
    git(repo, "checkout", "-q", ".")
    name = spec["name"]
    return {
        "instance_id": f"agentic__{name}-1",
        "repo": f"agentic-rollout/{name}",
        "base_commit": base,
        "problem_statement": spec["problem_statement"],
        "patch": gold,
        "test_patch": test_patch,
        "FAIL_TO_PASS": json.dumps(spec["FAIL_TO_PASS"]),
        "PASS_TO_PASS": json.dumps(spec["PASS_TO_PASS"]),
        "version": "1.0",
        "environment_setup_commit": base,
        "hints_text": "",
        "created_at": "2026-01-01T00:00:00Z",
        "image": f"agentic-rollout/swe-example-{name}:latest",
        "workdir": "/testbed",
        "test_command": TEST_COMMAND,
    }


def build_image(root: Path, tag: str) -> None:
    digest = hashlib.sha256()
    for path in sorted((root / "repo").rglob("*")):
        if path.is_file() and ".git" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    base_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", BASE_IMAGE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    digest.update(base_id.encode())
    hashed = f"{tag.rsplit(':', 1)[0]}:{digest.hexdigest()[:12]}"
    exists = (
        subprocess.run(
            ["docker", "image", "inspect", hashed], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not exists:
        (root / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nCOPY repo /testbed\nWORKDIR /testbed\n"
        )
        subprocess.run(
            ["docker", "build", "-q", "--network", "none", "-t", hashed, str(root)],
            check=True,
            capture_output=True,
        )
    subprocess.run(["docker", "tag", hashed, tag], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if tasks.jsonl is out of date")
    parser.add_argument("--no-images", action="store_true", help="only compute the tasks")
    args = parser.parse_args()
    rows = []
    for spec in REPOS:
        with tempfile.TemporaryDirectory() as tmp:
            row = make_repo(spec, Path(tmp))
            if not args.no_images:
                build_image(Path(tmp), row["image"])
            rows.append(row)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    target = HERE / "tasks.jsonl"
    if target.exists() and target.read_text() == text:
        print(f"{target} is up to date ({len(rows)} tasks)")
        return 0
    if args.check:
        print(f"{target} is out of date: run examples/swe/build.py", file=sys.stderr)
        return 1
    target.write_text(text)
    print(f"wrote {target} ({len(rows)} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
