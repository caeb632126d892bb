"""JUnit XML test reports, as GitLab (``artifacts:reports:junit``), GitHub test-report actions and Jenkins' JUnit
plugin read them: ``<testsuites>`` around one ``<testsuite>`` of ``<testcase>`` elements, a failed case holding a
``<failure message="..." type="...">`` with the details as its text -- the subset every one of them reads, the shape
pytest writes.

Written with the standard library's ElementTree, which escapes text and attributes: the format is this small, and a
reporting library would be one more dependency of the operator image for what is an offline command. Characters XML
1.0 cannot carry (control characters a YAML string may hold) are left out, since one would make the whole report
unreadable to its consumers.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Case", "Failure", "junit_xml"]

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Failure:
    """Why a case failed: ``message`` a line, ``text`` the details."""

    message: str
    text: str = ""
    type: str = "failure"


@dataclass(frozen=True)
class Case:
    """One test case; ``file`` and ``line`` where it is written (GitLab shows the file, Jenkins ignores both)."""

    name: str
    classname: str
    failure: Failure | None = None
    file: str | None = None
    line: int | None = None


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def junit_xml(suite: str, cases: Sequence[Case]) -> bytes:
    """The report of one suite of ``cases``, UTF-8 encoded, with its XML declaration."""
    failures = str(sum(1 for c in cases if c.failure is not None))
    counts = {"tests": str(len(cases)), "failures": failures, "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", {"name": _clean(suite), **counts})
    element = ET.SubElement(root, "testsuite", {"name": _clean(suite), **counts})
    for case in cases:
        attributes = {"name": _clean(case.name), "classname": _clean(case.classname)}
        if case.file is not None:
            attributes["file"] = _clean(case.file)
        if case.line is not None:
            attributes["line"] = str(case.line)
        testcase = ET.SubElement(element, "testcase", attributes)
        if case.failure is not None:
            failure = ET.SubElement(
                testcase, "failure", {"message": _clean(case.failure.message), "type": _clean(case.failure.type)}
            )
            failure.text = _clean(case.failure.text)
    ET.indent(root)
    report: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return report + b"\n"
