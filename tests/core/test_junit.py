"""JUnit XML reports (`netpol_auditor.junit`): the shape CI systems read, counts, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from netpol_auditor.junit import Case, Failure, junit_xml


def test_one_suite_with_counts_and_failures() -> None:
    violated = Failure("a -> b: expected DENIED", "details\nmore", "violated")
    report = junit_xml("suite", [
        Case("[0] holds", "expectations", file="e.yaml", line=1),
        Case("[1] a -> b", "expectations", violated, "e.yaml", 7),
    ])  # fmt: skip
    assert report.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<testsuites ")
    root = ET.fromstring(report)
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    (suite,) = root
    assert (suite.tag, suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        "testsuite", "suite", "2", "1", "0",
    )
    passed, failed = suite.findall("testcase")
    assert passed.attrib == {"name": "[0] holds", "classname": "expectations", "file": "e.yaml", "line": "1"}
    assert list(passed) == []
    failure = failed.find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.get("type"), failure.text) == (
        "a -> b: expected DENIED", "violated", "details\nmore",
    )


def test_markup_is_escaped_and_characters_xml_cannot_hold_are_dropped() -> None:
    report = junit_xml("s", [Case('<a href="x">&\x01', "c", Failure("bell\x07 ]]>", "nul\x00 <b/>"))])
    case = ET.fromstring(report).find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert case.get("name") == '<a href="x">&'
    assert (failure.get("message"), failure.text) == ("bell ]]>", "nul <b/>")
