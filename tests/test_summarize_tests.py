"""scripts/summarize_tests.py, the combined summary CI ends with: it counts every suite's tests whatever the
reporter's nesting, and fails a suite that failed, ran nothing or wrote no report."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from summarize_tests import counts, main  # noqa: E402

SHAPES = {
    # pytest / JUnit console: one suite
    "flat": '<testsuites><testsuite name="s"><testcase name="a"/><testcase name="b"><failure/></testcase>'
            '<testcase name="c"><skipped/></testcase></testsuite></testsuites>',
    # Swift xunit: suites in suites
    "nested": '<testsuites><testsuite name="all"><testsuite name="X"><testcase name="a"/><testcase name="b">'
              '<failure/></testcase></testsuite><testsuite name="Y"><testcase name="c"><skipped/></testcase>'
              '</testsuite></testsuite></testsuites>',
    # node --test's junit reporter for tests outside describe(): cases directly under <testsuites>
    "node": '<testsuites><testcase name="a"/><testcase name="b"><failure/></testcase>'
            '<testcase name="c"><skipped/></testcase></testsuites>',
}


def test_every_reporter_shape_is_counted(tmp_path):
    for name, xml in SHAPES.items():
        (tmp_path / f"{name}.xml").write_text(xml)
        assert counts(tmp_path / f"{name}.xml") == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1}, name


def test_a_failed_empty_or_missing_suite_fails_the_summary(tmp_path, capsys):
    (tmp_path / "ok.xml").write_text('<testsuites><testcase name="a"/></testsuites>')
    (tmp_path / "empty.xml").write_text("<testsuites/>")
    (tmp_path / "bad.xml").write_text(SHAPES["node"])
    assert main([str(tmp_path), "ok=0"]) == 0
    assert main([str(tmp_path), "ok=0,empty=0"]) == 1
    assert main([str(tmp_path), "ok=0,bad=1"]) == 1
    assert main([str(tmp_path), "ok=0,gone=0"]) == 1
    assert main([str(tmp_path), "ok=1"]) == 1     # a runner that exited non-zero fails even with passing cases
    out = capsys.readouterr().out
    assert "NO REPORT" in out and "no tests ran" in out


def test_a_suite_in_parts_counts_every_part(tmp_path, capsys):
    """scripts/test.sh writes the Python suite as python.xml plus python-strict-json.xml (run after the rest)."""
    (tmp_path / "py.xml").write_text('<testsuites><testcase name="a"/><testcase name="b"/></testsuites>')
    (tmp_path / "py-late.xml").write_text('<testsuites><testcase name="c"/></testsuites>')
    assert main([str(tmp_path), "py=0"]) == 0
    assert "py: 3 passed" in capsys.readouterr().out
    (tmp_path / "py-late.xml").write_text(SHAPES["node"])   # a failure in a later part fails the suite
    assert main([str(tmp_path), "py=0"]) == 1
